"""rul's HTTP service: a Hug (falcon) WSGI app over plain, framework-free functions.

``service.app`` holds the routes, all under ``/v1`` and answering JSON; run it with a WSGI
server, e.g. ``gunicorn --bind 127.0.0.1:8000 service.app:__hug_wsgi__``. The logic lives in
plain modules (``service.health``, ``service.errors``) that are tested without HTTP. hug comes
only through ``service.compat``, the one place that makes it import on current Python and NumPy.
Like ``rul``, the service never imports torch: a plant-side server needs numpy, onnxruntime and
hug only.
"""
