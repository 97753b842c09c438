"""The service skeleton: hug imports through service.compat without torch, and /v1 answers JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import types
import urllib.request
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, make_server

import numpy
import pytest

import rul
from service import compat
from service.compat import hug

ROOT = Path(__file__).resolve().parents[1]


def _run_python(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter that imports from this checkout."""
    path = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_service_imports_without_torch() -> None:
    # A fresh interpreter where `import torch` fails, as on a plant-side server without it.
    code = textwrap.dedent(
        """
        import sys
        import warnings

        sys.modules["torch"] = None  # makes `import torch` raise ImportError
        import service.app
        from service.compat import _IMPORT_DEPRECATIONS

        assert callable(service.app.__hug_wsgi__)
        heavy = sorted(m for m in ("torch", "pytorch_lightning") if sys.modules.get(m))
        assert not heavy, heavy
        left = [f for f in warnings.filters if f[1] and f[1].pattern in _IMPORT_DEPRECATIONS]
        assert not left, f"compat left warning filters behind: {left}"
        print("ok")
        """
    )
    done = _run_python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


@pytest.mark.parametrize(
    ("blocked", "package"), [("distutils", "setuptools"), ("cgi", "legacy-cgi")]
)
def test_missing_stdlib_module_names_its_package(blocked: str, package: str) -> None:
    # As on Python 3.12+ without setuptools, or 3.13+ without legacy-cgi.
    code = f"import sys; sys.modules[{blocked!r}] = None; import service.app"
    done = _run_python(code)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: hug"), done.stderr
    assert f"install the '{package}' package" in last


def test_numpy_unicode_is_only_an_alias_of_str_() -> None:
    assert numpy.unicode_ is numpy.str_


def test_alias_is_added_only_when_missing() -> None:
    numpy2 = types.ModuleType("numpy2")
    numpy2.str_ = str
    compat.alias_numpy_unicode(numpy2)
    assert numpy2.unicode_ is str

    numpy1 = types.ModuleType("numpy1")
    numpy1.str_ = str
    numpy1.unicode_ = sentinel = type("unicode_", (str,), {})
    compat.alias_numpy_unicode(numpy1)
    assert numpy1.unicode_ is sentinel


@pytest.mark.parametrize(
    ("module", "names", "package"),
    [("no_such_distutils.util", ("strtobool",), "setuptools"), ("json", ("nope",), "legacy-cgi")],
)
def test_missing_module_names_the_package(
    module: str, names: tuple[str, ...], package: str
) -> None:
    with pytest.raises(ImportError, match=f"install the '{package}' package"):
        compat._require(module, names, package)


def test_import_hug_returns_hug() -> None:
    assert compat.import_hug() is hug
    assert hug.__name__ == "hug"


def test_health() -> None:
    import service.app

    response = hug.test.get(service.app, "/v1/health")
    assert response.status == hug.HTTP_200
    assert response.content_type.startswith("application/json")
    assert response.data == {"status": "ok", "version": rul.__version__}


@pytest.mark.parametrize("path", ["/nowhere", "/health", "/v1/nowhere", "/v2/health"])
def test_unknown_path_is_a_json_404(path: str) -> None:
    import service.app

    response = hug.test.get(service.app, path)
    assert response.status == hug.HTTP_404
    assert response.content_type.startswith("application/json")
    error = response.data["error"]
    assert set(error) == {"status", "message", "field"}
    assert error["status"] == 404
    assert path in error["message"]
    assert error["field"] is None


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def test_health_over_real_http() -> None:
    import service.app

    server = make_server("127.0.0.1", 0, service.app.__hug_wsgi__, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/v1/health"
        with urllib.request.urlopen(url, timeout=10) as answer:
            assert answer.status == 200
            assert answer.headers["Content-Type"].startswith("application/json")
            assert json.loads(answer.read()) == {"status": "ok", "version": rul.__version__}
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
