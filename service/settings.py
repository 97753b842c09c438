"""The service's configuration: every setting, its environment variable, and its default.

`rul serve` flags override the environment; the environment overrides the defaults. Bad values
fail at startup with the variable's name, never at the first request.

| variable | default | meaning |
|---|---|---|
| RUL_MODEL | the shipped FD001 model | the default model file (also `rul serve --model`) |
| RUL_MODELS_DIR | unset | a folder of further MODEL.onnx files, served by file name |
| RUL_DB | rul-service.db | SQLite database of readings, forecasts, alerts (`--db`) |
| RUL_API_KEYS | unset | comma-separated API keys; unset with no keys file: auth off |
| RUL_API_KEYS_FILE | unset | a file of API keys, one per line (# comments) |
| RUL_WEBHOOK_URLS | unset | comma-separated URLs that receive alerts |
| RUL_WEBHOOK_SECRET | unset | HMAC-SHA256 key that signs alerts (X-RUL-Signature) |
| RUL_ALERT_THRESHOLD | 0.5 | failure_probability at which an asset alerts (per asset too) |
| RUL_WEBHOOK_TIMEOUT | 5 | seconds one delivery may take |
| RUL_WEBHOOK_MAX_BACKOFF | 300 | longest wait between retries, seconds |
| RUL_READ_TIMEOUT | 10 | seconds the headers, then the body, may take to arrive: then 408 |
| RUL_MAX_BODY_BYTES | 33554432 | largest request body (413 above, before reading it) |
| RUL_MAX_ASSETS | 10000 | most assets (or windows) in one batch call (413 above) |
| RUL_MAX_ROWS | 100000 | most readings rows in one JSON call, windows' rows included (413 above) |
| RUL_HISTORY_LIMIT | 1000 | largest page of an asset's history |
| RUL_ORT_THREADS | cores / workers | onnxruntime intra-op threads per worker |
| RUL_HOST / RUL_PORT / RUL_WORKERS | 127.0.0.1 / 8000 / 2 | `rul serve` bind and worker count |
| RUL_METRICS_DIR | a fresh temporary folder | Prometheus multiprocess folder, its own (emptied) |
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from rul.errors import ConfigError
from rul.forecaster import default_model_path

WORKER_TIMEOUT_S = 30
"""gunicorn kills a worker that has not finished a request in this many seconds."""


@dataclass(frozen=True)
class Settings:
    """Everything the service reads from its environment."""

    model: Path = field(default_factory=lambda: default_model_path({}))
    models_dir: Path | None = None
    db: Path = Path("rul-service.db")
    api_keys: tuple[str, ...] = ()
    webhook_urls: tuple[str, ...] = ()
    webhook_secret: str | None = None
    alert_threshold: float = 0.5
    webhook_timeout: float = 5.0
    webhook_max_backoff: float = 300.0
    read_timeout: float = 10.0
    """A request body not in after this long (stalled, or trickled in) answers 408 and frees
    its worker (below WORKER_TIMEOUT_S, after which gunicorn would kill the worker instead)."""
    max_body_bytes: int = 32 * 1024 * 1024
    max_assets: int = 10_000
    max_rows: int = 100_000
    history_limit: int = 1000
    ort_threads: int | None = None
    """None: the cores divided among the workers (`threads_per_worker`)."""
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 2

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys)

    @property
    def threads_per_worker(self) -> int:
        """onnxruntime intra-op threads in each worker."""
        return self.ort_threads or max(1, (os.cpu_count() or 1) // self.workers)

    def with_overrides(self, **overrides: Any) -> Settings:
        """These settings with the non-None values of `overrides` (e.g. `rul serve` flags)."""
        return _checked(replace(self, **{k: v for k, v in overrides.items() if v is not None}))


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _path(value: str) -> Path:
    return Path(value).expanduser()


# Setting -> (its environment variable, the parser of the variable's text): the one table
# that from_env reads, to_env writes and error messages name.
VARIABLES: dict[str, tuple[str, Callable[[str], Any]]] = {
    "model": ("RUL_MODEL", _path),
    "models_dir": ("RUL_MODELS_DIR", _path),
    "db": ("RUL_DB", _path),
    "api_keys": ("RUL_API_KEYS", _split),
    "webhook_urls": ("RUL_WEBHOOK_URLS", _split),
    "webhook_secret": ("RUL_WEBHOOK_SECRET", str),
    "alert_threshold": ("RUL_ALERT_THRESHOLD", float),
    "webhook_timeout": ("RUL_WEBHOOK_TIMEOUT", float),
    "webhook_max_backoff": ("RUL_WEBHOOK_MAX_BACKOFF", float),
    "read_timeout": ("RUL_READ_TIMEOUT", float),
    "max_body_bytes": ("RUL_MAX_BODY_BYTES", int),
    "max_assets": ("RUL_MAX_ASSETS", int),
    "max_rows": ("RUL_MAX_ROWS", int),
    "history_limit": ("RUL_HISTORY_LIMIT", int),
    "ort_threads": ("RUL_ORT_THREADS", int),
    "host": ("RUL_HOST", str),
    "port": ("RUL_PORT", int),
    "workers": ("RUL_WORKERS", int),
}
_FLAGS = {"model": "--model", "models_dir": "--models-dir", "db": "--db",
          "ort_threads": "--threads", "host": "--host", "port": "--port",
          "workers": "--workers"}
_POSITIVE = ("max_body_bytes", "max_assets", "max_rows", "history_limit", "ort_threads",
             "workers", "webhook_timeout", "webhook_max_backoff", "read_timeout")


def variable(name: str) -> str:
    """How an error names a setting: its variable, and its `rul serve` flag if it has one."""
    flag = _FLAGS.get(name)
    return VARIABLES[name][0] + (f" ({flag})" if flag else "")


def from_env(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from environment variables (see the module table); unset ones keep defaults."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {"model": default_model_path(env)}
    for name, (var, parse) in VARIABLES.items():
        text = env.get(var, "").strip()
        if not text or name == "model":
            continue
        try:
            values[name] = parse(text)
        except ValueError:
            kind = "an integer" if parse is int else "a number"
            raise ConfigError(f"{var}={text!r} is not {kind}") from None
    keys = values.get("api_keys", ())
    if keys_file := env.get("RUL_API_KEYS_FILE", "").strip():
        keys += read_keys_file(_path(keys_file))
    for key in keys:
        if "," in key or any(c.isspace() for c in key) or not key.isprintable():
            raise ConfigError("API keys must be printable, without commas or spaces (they "
                              f"travel in one header and one comma-separated variable); "
                              f"a key of {len(key)} characters is not")
    values["api_keys"] = tuple(dict.fromkeys(keys))
    return _checked(Settings(**values))


def read_keys_file(path: Path) -> tuple[str, ...]:
    """API keys from a file: one per line, blank lines and `#` comments ignored."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"RUL_API_KEYS_FILE: cannot read {path} ({exc.strerror})") from None
    keys = tuple(line.split("#", 1)[0].strip() for line in text.splitlines())
    return tuple(key for key in keys if key)


def to_env(settings: Settings) -> dict[str, str]:
    """The environment that reproduces `settings` in another process (gunicorn's workers)."""
    env = {}
    for name, (var, _) in VARIABLES.items():
        value = getattr(settings, name)
        if isinstance(value, tuple):
            env[var] = ",".join(value)
        elif value is not None:
            env[var] = str(value)
    return env


def webhook_url_problem(url: str) -> str | None:
    """Why `url` cannot take alerts (None if it can): caught at startup, not on each delivery."""
    if not url.startswith(("http://", "https://")):
        return "is not an http(s) URL"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is the check (ValueError if it is not one)
    except ValueError as exc:
        return f"does not parse: {exc}"
    if not parts.hostname:
        return "names no host"
    if any(c.isspace() or not c.isprintable() for c in url):
        return "holds whitespace or control characters"
    return None


def _checked(settings: Settings) -> Settings:
    for name in _POSITIVE:
        value = getattr(settings, name)
        if value is not None and (not value > 0 or not math.isfinite(value)):
            raise ConfigError(f"{variable(name)} must be a positive number; got {value}")
    if settings.read_timeout >= WORKER_TIMEOUT_S:
        raise ConfigError(f"RUL_READ_TIMEOUT must be below the worker timeout of "
                          f"{WORKER_TIMEOUT_S} s; got {settings.read_timeout}")
    if not 0.0 < settings.alert_threshold <= 1.0:
        raise ConfigError(f"RUL_ALERT_THRESHOLD must be in (0, 1]; got {settings.alert_threshold}")
    if not 0 < settings.port < 65536:
        raise ConfigError(f"{variable('port')} must be in 1..65535; got {settings.port}")
    for url in settings.webhook_urls:
        problem = webhook_url_problem(url)
        if problem is not None:
            raise ConfigError(f"RUL_WEBHOOK_URLS: {url!r} {problem}")
    if settings.webhook_urls and not settings.webhook_secret:
        raise ConfigError("RUL_WEBHOOK_URLS is set but RUL_WEBHOOK_SECRET is not: alerts are "
                          "signed, so receivers can tell them from forgeries")
    return settings
