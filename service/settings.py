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
| RUL_MAX_BODY_BYTES | 33554432 | largest request body (413 above, before reading it) |
| RUL_MAX_ASSETS | 10000 | most assets (or windows) in one batch call (413 above) |
| RUL_MAX_ROWS | 100000 | most readings rows in one call (413 above) |
| RUL_HISTORY_LIMIT | 1000 | largest page of an asset's history |
| RUL_ORT_THREADS | cores / workers | onnxruntime intra-op threads per worker |
| RUL_HOST / RUL_PORT / RUL_WORKERS | 127.0.0.1 / 8000 / 2 | `rul serve` bind and worker count |
| RUL_METRICS_DIR | a fresh temporary folder | Prometheus multiprocess folder (wiped at start) |
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from rul.errors import ConfigError
from rul.forecaster import default_model_path


@dataclass(frozen=True)
class Settings:
    """Everything the service reads from its environment."""

    model: Path = field(default_factory=default_model_path)
    models_dir: Path | None = None
    db: Path = Path("rul-service.db")
    api_keys: tuple[str, ...] = ()
    webhook_urls: tuple[str, ...] = ()
    webhook_secret: str | None = None
    alert_threshold: float = 0.5
    webhook_timeout: float = 5.0
    webhook_max_backoff: float = 300.0
    max_body_bytes: int = 32 * 1024 * 1024
    max_assets: int = 10_000
    max_rows: int = 100_000
    history_limit: int = 1000
    ort_threads: int = 1
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 2

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys)

    def with_overrides(self, **overrides: Any) -> Settings:
        """These settings with the non-None values of `overrides` (e.g. `rul serve` flags)."""
        return _checked(replace(self, **{k: v for k, v in overrides.items() if v is not None}))


def from_env(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from environment variables (see the module table); unset ones keep defaults."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}

    def get(name: str) -> str | None:
        value = env.get(name)
        return value.strip() if value is not None and value.strip() else None

    values["model"] = default_model_path(env)
    paths = {"models_dir": "RUL_MODELS_DIR", "db": "RUL_DB"}
    for key, name in paths.items():
        if (value := get(name)) is not None:
            values[key] = Path(value).expanduser()
    numbers = {
        "alert_threshold": ("RUL_ALERT_THRESHOLD", float),
        "webhook_timeout": ("RUL_WEBHOOK_TIMEOUT", float),
        "webhook_max_backoff": ("RUL_WEBHOOK_MAX_BACKOFF", float),
        "max_body_bytes": ("RUL_MAX_BODY_BYTES", int),
        "max_assets": ("RUL_MAX_ASSETS", int),
        "max_rows": ("RUL_MAX_ROWS", int),
        "history_limit": ("RUL_HISTORY_LIMIT", int),
        "ort_threads": ("RUL_ORT_THREADS", int),
        "port": ("RUL_PORT", int),
        "workers": ("RUL_WORKERS", int),
    }
    for key, (name, kind) in numbers.items():
        if (value := get(name)) is not None:
            try:
                values[key] = kind(value)
            except ValueError:
                raise ConfigError(f"{name}={value!r} is not {_kind_name(kind)}") from None
    if (value := get("RUL_HOST")) is not None:
        values["host"] = value
    if (value := get("RUL_WEBHOOK_SECRET")) is not None:
        values["webhook_secret"] = value
    if (value := get("RUL_WEBHOOK_URLS")) is not None:
        values["webhook_urls"] = _split(value)
    keys = _split(get("RUL_API_KEYS") or "")
    if (keys_file := get("RUL_API_KEYS_FILE")) is not None:
        keys += read_keys_file(Path(keys_file).expanduser())
    for key in keys:
        if "," in key or any(c.isspace() for c in key) or not key.isprintable():
            raise ConfigError("API keys must be printable, without commas or spaces (they "
                              f"travel in one header and one comma-separated variable); "
                              f"a key of {len(key)} characters is not")
    if keys:
        values["api_keys"] = tuple(dict.fromkeys(keys))
    if "ort_threads" not in values:
        workers = values.get("workers", Settings.workers)
        values["ort_threads"] = max(1, (os.cpu_count() or 1) // max(1, workers))
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
    names = {
        "model": "RUL_MODEL", "models_dir": "RUL_MODELS_DIR", "db": "RUL_DB",
        "alert_threshold": "RUL_ALERT_THRESHOLD", "webhook_timeout": "RUL_WEBHOOK_TIMEOUT",
        "webhook_max_backoff": "RUL_WEBHOOK_MAX_BACKOFF", "max_body_bytes": "RUL_MAX_BODY_BYTES",
        "max_assets": "RUL_MAX_ASSETS", "max_rows": "RUL_MAX_ROWS",
        "history_limit": "RUL_HISTORY_LIMIT", "ort_threads": "RUL_ORT_THREADS",
        "host": "RUL_HOST", "port": "RUL_PORT", "workers": "RUL_WORKERS",
        "webhook_secret": "RUL_WEBHOOK_SECRET",
    }
    env = {}
    for f in fields(settings):
        value = getattr(settings, f.name)
        if f.name in names and value is not None:
            env[names[f.name]] = str(value)
    env["RUL_API_KEYS"] = ",".join(settings.api_keys)
    env["RUL_WEBHOOK_URLS"] = ",".join(settings.webhook_urls)
    return env


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _kind_name(kind: type) -> str:
    return "an integer" if kind is int else "a number"


_VARIABLES = {
    "max_body_bytes": "RUL_MAX_BODY_BYTES", "max_assets": "RUL_MAX_ASSETS",
    "max_rows": "RUL_MAX_ROWS", "history_limit": "RUL_HISTORY_LIMIT",
    "ort_threads": "RUL_ORT_THREADS (--threads)", "workers": "RUL_WORKERS (--workers)",
    "webhook_timeout": "RUL_WEBHOOK_TIMEOUT", "webhook_max_backoff": "RUL_WEBHOOK_MAX_BACKOFF",
}


def _checked(settings: Settings) -> Settings:
    for name, variable in _VARIABLES.items():
        value = getattr(settings, name)
        if not value > 0 or not math.isfinite(value):
            raise ConfigError(f"{variable} must be a positive number; got {value}")
    if not 0.0 < settings.alert_threshold <= 1.0:
        raise ConfigError(f"RUL_ALERT_THRESHOLD must be in (0, 1]; got {settings.alert_threshold}")
    if not 0 < settings.port < 65536:
        raise ConfigError(f"RUL_PORT (--port) must be in 1..65535; got {settings.port}")
    for url in settings.webhook_urls:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"RUL_WEBHOOK_URLS: {url!r} is not an http(s) URL")
    if settings.webhook_urls and not settings.webhook_secret:
        raise ConfigError("RUL_WEBHOOK_URLS is set but RUL_WEBHOOK_SECRET is not: alerts are "
                          "signed, so receivers can tell them from forgeries")
    return settings
