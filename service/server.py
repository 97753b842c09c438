"""`rul serve`: the Hug app under gunicorn, with N worker processes.

Before any worker starts, the master checks what would make every worker fail: the models are
loaded and verified in a short-lived child process (onnxruntime is never initialised in the
master, whose state every worker would inherit by fork) and the database is created and
closed again (an SQLite connection must not cross a fork). Workers then read the same settings
from the environment, load their own onnxruntime sessions, start webhook delivery, and freeze
what they loaded out of the garbage collector's full passes.
Prometheus multiprocess mode gets a fresh folder; dead workers' samples are folded away.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from rul.errors import ConfigError
from service.settings import WORKER_TIMEOUT_S, Settings, to_env

log = logging.getLogger("rul.service")

METRICS_DIR_ENV = "RUL_METRICS_DIR"


def check_models(settings: Settings) -> str | None:
    """None if every model loads and verifies, else the reason (checked in a spawned child)."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(_load_models, (settings.model, settings.models_dir))


def _load_models(model: Path, models_dir: Path | None) -> str | None:
    from rul.errors import RulError
    from service.models import ModelRegistry

    try:
        ModelRegistry.load(model, models_dir, threads=1)
    except RulError as exc:
        return str(exc)
    return None


def prepare(settings: Settings) -> Path | None:
    """Everything `serve` checks and sets up before gunicorn starts (ConfigError if unfit).
    Returns the metrics folder it made for this run (None when $RUL_METRICS_DIR names one):
    the caller removes it when the server stops."""
    problem = check_models(settings)
    if problem is not None:
        raise ConfigError(f"cannot serve: {problem}")
    from service.storage import StorageError, Store

    store = Store(settings.db)
    try:
        store.initialise()
        problem = store.writable()
    except StorageError as exc:
        problem = str(exc)
    finally:
        store.close()
    if problem is not None:
        raise ConfigError(f"cannot serve: {problem}")
    os.environ.update(to_env(settings))
    given = os.environ.get(METRICS_DIR_ENV)
    if given:
        clear_metrics_dir(Path(given))
    metrics_dir = given or tempfile.mkdtemp(prefix="rul-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    return None if given else Path(metrics_dir)


# prometheus_client's multiprocess files: <type>_<pid>.db (gauges: gauge_<mode>_<pid>.db).
_SAMPLE_FILE = re.compile(r"(counter|gauge_[a-z]+|histogram|summary)_[0-9]+\.db")


def clear_metrics_dir(folder: Path) -> None:
    """Make `folder` (RUL_METRICS_DIR) an empty samples folder: an earlier run's samples would
    add up. Refuses (ConfigError) a folder holding anything else, which it will not delete."""
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"cannot serve: {METRICS_DIR_ENV}={folder} is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    entries = sorted(folder.iterdir())
    foreign = [e.name for e in entries if not (e.is_file() and _SAMPLE_FILE.fullmatch(e.name))]
    if foreign:
        raise ConfigError(f"cannot serve: {METRICS_DIR_ENV}={folder} holds files that are not "
                          f"Prometheus samples ({', '.join(foreign[:3])}"
                          f"{', ...' if len(foreign) > 3 else ''}); it is emptied at every "
                          "start, so give it a folder of its own")
    for entry in entries:
        entry.unlink()


def gunicorn_options(settings: Settings, *, access_log: bool = False) -> dict[str, Any]:
    return {
        "bind": f"[{settings.host}]:{settings.port}" if ":" in settings.host
        else f"{settings.host}:{settings.port}",
        "workers": settings.workers,
        "worker_class": "service.worker.JsonErrorWorker",
        "timeout": WORKER_TIMEOUT_S,
        "graceful_timeout": 10,
        "accesslog": "-" if access_log else None,
        "errorlog": "-",
        "loglevel": "info",
        "proc_name": "rul-serve",
        # gunicorn >= 25.1 opens a control socket in $HOME by default; rul does not use it.
        "control_socket_disable": True,
        "post_worker_init": _post_worker_init,
        "worker_exit": _worker_exit,
        "child_exit": _child_exit,
    }


def _post_worker_init(worker: Any) -> None:
    from service import app

    app.start()
    # What a worker has loaded by now lives as long as it does. Frozen, it is left out of the
    # collector's full passes, which otherwise walk all ~90k objects and stall the request
    # in hand and every one queued behind it (docs/PERFORMANCE.md, "Full collections, and the
    # single predict's spread").
    gc.freeze()


def _worker_exit(server: Any, worker: Any) -> None:
    from service import app

    app.stop()


def _child_exit(server: Any, worker: Any) -> None:
    # Runs in the master: an exception here would stop the whole server over one worker.
    try:
        from service import metrics

        metrics.mark_worker_dead(worker.pid)
    except Exception:
        log.exception("could not fold away the metrics of worker %s", worker.pid)


def serve(settings: Settings, *, access_log: bool = False) -> None:
    """Run the service until stopped (SIGTERM/SIGINT: graceful)."""
    from gunicorn.app.base import BaseApplication

    own_metrics_dir = prepare(settings)
    if not settings.auth_enabled:
        log.warning("no API keys configured (RUL_API_KEYS): every endpoint is open")
    options = gunicorn_options(settings, access_log=access_log)

    class Application(BaseApplication):
        def load_config(self) -> None:
            for key, value in options.items():
                if value is not None and key in self.cfg.settings:
                    self.cfg.set(key, value)

        def load(self) -> Any:
            from service.app import __hug_wsgi__

            return __hug_wsgi__

    master = os.getpid()
    try:
        Application().run()  # gunicorn ends it with sys.exit
    finally:
        # Workers are forked inside run() and leave through this same frame when they exit
        # (a restart, a timeout): only the master may remove the folder they all share.
        if own_metrics_dir is not None and os.getpid() == master:
            shutil.rmtree(own_metrics_dir, ignore_errors=True)
