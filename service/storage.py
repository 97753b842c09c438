"""SQLite storage of assets, readings, forecasts, alerts and the webhook outbox.

One database file in WAL mode, shared by every gunicorn worker. Writers take the write lock up
front (BEGIN IMMEDIATE) and do all of one request in one transaction, so concurrent ingestion
from several processes serialises cleanly and a crash leaves either the whole request or none
of it. synchronous=FULL: a committed reading survives a power cut, not only a process crash.

Tables (schema version in PRAGMA user_version):
- assets: one row per asset: its model, alert threshold (NULL: the global one), whether it is
  above its threshold now (`alerting`, so one crossing makes one alert), last cycle.
- readings: (asset_id, cycle) -> the reading as sent, a JSON object by feature name.
- forecasts: (asset_id, cycle, model) -> rul, rul_quantiles (JSON), failure_probability, ...
- alerts: every alert ever raised, with its payload.
- outbox: one row per (alert, webhook URL), its delivery state (the body is the alert's
  payload); leases stop two workers sending the same row at once.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from rul.schema import CYCLE

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 10_000
"""How long a write waits for another's lock before the request answers 503: well inside
gunicorn's 30 s worker timeout, so a long-locked database is a 503, never a killed worker."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS assets (
    asset_id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    alert_threshold REAL,
    alerting INTEGER NOT NULL DEFAULT 0,
    last_cycle INTEGER,
    n_readings INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS readings (
    asset_id TEXT NOT NULL,
    cycle INTEGER NOT NULL,
    reading TEXT NOT NULL,
    received_at REAL NOT NULL,
    PRIMARY KEY (asset_id, cycle)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS forecasts (
    asset_id TEXT NOT NULL,
    cycle INTEGER NOT NULL,
    model TEXT NOT NULL,
    model_version TEXT NOT NULL,
    rul REAL NOT NULL,
    rul_quantiles TEXT NOT NULL,
    failure_probability REAL NOT NULL,
    horizon REAL NOT NULL,
    cycles_padded INTEGER NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (asset_id, cycle, model)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS alerts (
    alert_id TEXT PRIMARY KEY,
    asset_id TEXT NOT NULL,
    cycle INTEGER NOT NULL,
    failure_probability REAL NOT NULL,
    threshold REAL NOT NULL,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_by_asset ON alerts (asset_id, cycle);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id TEXT NOT NULL REFERENCES alerts (alert_id),
    url TEXT NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    lease_until REAL,
    delivered_at REAL,
    last_status INTEGER,
    last_error TEXT,
    UNIQUE (alert_id, url)
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (delivered_at, next_attempt_at);
"""


class StorageError(RuntimeError):
    """The database cannot be opened or written (said at startup, or as a 503)."""


class Store:
    """The service's database: one connection per thread, explicit transactions."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._local = threading.local()

    def connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000,
                                   check_same_thread=True)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot open the database ({exc})") from None
        return conn

    def initialise(self) -> None:
        """Create the tables (idempotent; safe when several processes start at once)."""
        if not self.path.parent.exists():
            raise StorageError(f"{self.path}: the folder {self.path.parent} does not exist")
        with self.transaction() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StorageError(f"{self.path}: schema version {version} is newer than this "
                                   f"rul ({SCHEMA_VERSION}); upgrade rul")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction holding the lock from its start (no upgrade deadlocks)."""
        conn = self.connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot start a write ({exc})") from None
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")

    def writable(self) -> str | None:
        """None if a write transaction can be taken now, else why not (readiness)."""
        try:
            with self.transaction() as conn:
                conn.execute("SELECT count(*) FROM assets").fetchone()
        except (StorageError, sqlite3.Error) as exc:
            return str(exc)
        return None

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


# --------------------------------------------------------------------------- assets


def get_asset(conn: sqlite3.Connection, asset_id: str) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT asset_id, model, alert_threshold, alerting, last_cycle, n_readings, created_at,"
        " updated_at FROM assets WHERE asset_id = ?", (asset_id,)).fetchone()
    return None if row is None else _asset_dict(row)


def _asset_dict(row: Sequence[Any]) -> dict[str, Any]:
    keys = ("asset_id", "model", "alert_threshold", "alerting", "last_cycle", "n_readings",
            "created_at", "updated_at")
    asset = dict(zip(keys, row, strict=True))
    asset["alerting"] = bool(asset["alerting"])
    return asset


def put_asset(conn: sqlite3.Connection, asset_id: str, model: str,
              alert_threshold: float | None, now: float) -> None:
    conn.execute(
        "INSERT INTO assets (asset_id, model, alert_threshold, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (asset_id) DO UPDATE SET model = excluded.model,"
        " alert_threshold = excluded.alert_threshold, updated_at = excluded.updated_at",
        (asset_id, model, alert_threshold, now, now))


def list_assets(conn: sqlite3.Connection, after: str | None, limit: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT asset_id, model, alert_threshold, alerting, last_cycle, n_readings, created_at,"
        " updated_at FROM assets WHERE asset_id > ? ORDER BY asset_id LIMIT ?",
        (after or "", limit)).fetchall()
    return [_asset_dict(row) for row in rows]


def count_assets(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM assets").fetchone()[0])


# --------------------------------------------------------------------------- readings


def existing_readings(conn: sqlite3.Connection, asset_id: str, first: int, last: int
                      ) -> dict[int, dict[str, Any]]:
    rows = conn.execute("SELECT cycle, reading FROM readings WHERE asset_id = ? AND cycle"
                        " BETWEEN ? AND ?", (asset_id, first, last)).fetchall()
    return {cycle: _reading(cycle, reading) for cycle, reading in rows}


def insert_readings(conn: sqlite3.Connection, asset_id: str,
                    rows: Sequence[tuple[int, bytes]], now: float) -> None:
    conn.executemany("INSERT INTO readings (asset_id, cycle, reading, received_at)"
                     " VALUES (?, ?, ?, ?)",
                     [(asset_id, cycle, reading.decode(), now) for cycle, reading in rows])
    conn.execute(
        "UPDATE assets SET n_readings = n_readings + ?, last_cycle = max(coalesce(last_cycle,"
        " -1), ?), updated_at = ? WHERE asset_id = ?",
        (len(rows), max(cycle for cycle, _ in rows), now, asset_id))


def readings_tail(conn: sqlite3.Connection, asset_id: str, until: int, count: int
                  ) -> list[tuple[int, dict[str, Any]]]:
    """The last `count` readings at or before cycle `until`, oldest first."""
    rows = conn.execute("SELECT cycle, reading FROM readings WHERE asset_id = ? AND cycle <= ?"
                        " ORDER BY cycle DESC LIMIT ?", (asset_id, until, count)).fetchall()
    return [(cycle, _reading(cycle, reading)) for cycle, reading in reversed(rows)]


def readings_page(conn: sqlite3.Connection, asset_id: str, first: int, last: int, limit: int
                  ) -> list[dict[str, Any]]:
    rows = conn.execute("SELECT cycle, reading, received_at FROM readings WHERE asset_id = ?"
                        " AND cycle BETWEEN ? AND ? ORDER BY cycle LIMIT ?",
                        (asset_id, first, last, limit)).fetchall()
    return [{"cycle": cycle, "received_at": received, **orjson.loads(reading)}
            for cycle, reading, received in rows]


def _reading(cycle: int, text: str) -> dict[str, Any]:
    """A stored reading by feature name, its cycle included: the cycle is kept once, in the
    key, and is a feature of models that take the asset's age."""
    return {**orjson.loads(text), CYCLE: cycle}


# --------------------------------------------------------------------------- forecasts

_FORECAST_COLUMNS = ("asset_id", "cycle", "model", "model_version", "rul", "rul_quantiles",
                     "failure_probability", "horizon", "cycles_padded", "created_at")


def insert_forecasts(conn: sqlite3.Connection, rows: Sequence[dict[str, Any]]) -> None:
    conn.executemany(
        f"INSERT OR REPLACE INTO forecasts ({', '.join(_FORECAST_COLUMNS)})"
        f" VALUES ({', '.join('?' * len(_FORECAST_COLUMNS))})",
        [tuple(orjson.dumps(row[c]).decode() if c == "rul_quantiles" else row[c]
               for c in _FORECAST_COLUMNS) for row in rows])


def _forecast_dict(row: Sequence[Any]) -> dict[str, Any]:
    forecast = dict(zip(_FORECAST_COLUMNS, row, strict=True))
    forecast["rul_quantiles"] = orjson.loads(forecast["rul_quantiles"])
    return forecast


def latest_forecast(conn: sqlite3.Connection, asset_id: str, model: str
                    ) -> dict[str, Any] | None:
    row = conn.execute(f"SELECT {', '.join(_FORECAST_COLUMNS)} FROM forecasts WHERE asset_id = ?"
                       " AND model = ? ORDER BY cycle DESC LIMIT 1", (asset_id, model)).fetchone()
    return None if row is None else _forecast_dict(row)


def forecasts_page(conn: sqlite3.Connection, asset_id: str, first: int, last: int, limit: int
                   ) -> list[dict[str, Any]]:
    rows = conn.execute(f"SELECT {', '.join(_FORECAST_COLUMNS)} FROM forecasts WHERE asset_id = ?"
                        " AND cycle BETWEEN ? AND ? ORDER BY cycle, model LIMIT ?",
                        (asset_id, first, last, limit)).fetchall()
    return [_forecast_dict(row) for row in rows]


def latest_forecasts(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Each asset's newest forecast with the asset's own model (the fleet report), and the
    asset's own alert_threshold (None: the global one)."""
    columns = ", ".join(f"f.{c}" for c in _FORECAST_COLUMNS)
    rows = conn.execute(
        f"SELECT {columns}, a.alert_threshold FROM assets a JOIN forecasts f ON"
        " f.asset_id = a.asset_id AND f.model = a.model AND f.cycle = (SELECT max(cycle) FROM"
        " forecasts g WHERE g.asset_id = a.asset_id AND g.model = a.model)"
        " ORDER BY a.asset_id").fetchall()
    return [{**_forecast_dict(row[:-1]), "alert_threshold": row[-1]} for row in rows]


# --------------------------------------------------------------------------- alerts, outbox


def set_alerting(conn: sqlite3.Connection, asset_id: str, alerting: bool) -> None:
    conn.execute("UPDATE assets SET alerting = ? WHERE asset_id = ?", (int(alerting), asset_id))


def insert_alert(conn: sqlite3.Connection, alert: dict[str, Any], urls: Sequence[str],
                 now: float) -> None:
    payload = orjson.dumps(alert).decode()
    conn.execute("INSERT INTO alerts (alert_id, asset_id, cycle, failure_probability, threshold,"
                 " payload, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                 (alert["alert_id"], alert["asset_id"], alert["cycle"],
                  alert["failure_probability"], alert["threshold"], payload, now))
    conn.executemany("INSERT INTO outbox (alert_id, url, created_at, next_attempt_at)"
                     " VALUES (?, ?, ?, ?)", [(alert["alert_id"], url, now, now) for url in urls])


def list_alerts(conn: sqlite3.Connection, asset_id: str | None, limit: int
                ) -> list[dict[str, Any]]:
    query = ("SELECT a.payload, (SELECT count(*) FROM outbox o WHERE o.alert_id = a.alert_id"
             " AND o.delivered_at IS NULL) FROM alerts a")
    args: tuple[Any, ...] = ()
    if asset_id is not None:
        query += " WHERE a.asset_id = ?"
        args = (asset_id,)
    rows = conn.execute(query + " ORDER BY a.created_at DESC LIMIT ?", (*args, limit)).fetchall()
    return [{**orjson.loads(payload), "pending_deliveries": pending} for payload, pending in rows]


def _url_filter(urls: Sequence[str]) -> str:
    return f"o.url IN ({', '.join('?' * len(urls))})"


def claim_due(conn: sqlite3.Connection, now: float, lease_seconds: float, limit: int,
              urls: Sequence[str]) -> list[tuple[int, str, str, str, int]]:
    """Lease up to `limit` undelivered, due outbox rows for `urls` (the configured webhooks; a
    row for any other URL is held): (id, alert_id, url, payload, attempts). Call inside a
    transaction; a lease that expires (its worker died) frees the row again."""
    if not urls:
        return []
    rows = conn.execute(
        "SELECT o.id, o.alert_id, o.url, a.payload, o.attempts FROM outbox o JOIN alerts a"
        " USING (alert_id) WHERE o.delivered_at IS NULL AND o.next_attempt_at <= ? AND"
        f" (o.lease_until IS NULL OR o.lease_until <= ?) AND {_url_filter(urls)}"
        " ORDER BY o.id LIMIT ?",
        (now, now, *urls, limit)).fetchall()
    conn.executemany("UPDATE outbox SET lease_until = ? WHERE id = ?",
                     [(now + lease_seconds, row[0]) for row in rows])
    return rows


def mark_delivered(conn: sqlite3.Connection, row_id: int, status: int, now: float) -> None:
    conn.execute("UPDATE outbox SET delivered_at = ?, attempts = attempts + 1, last_status = ?,"
                 " lease_until = NULL, last_error = NULL WHERE id = ?", (now, status, row_id))


def mark_failed(conn: sqlite3.Connection, row_id: int, status: int | None, error: str,
                retry_at: float) -> None:
    conn.execute("UPDATE outbox SET attempts = attempts + 1, last_status = ?, last_error = ?,"
                 " next_attempt_at = ?, lease_until = NULL WHERE id = ?",
                 (status, error[:500], retry_at, row_id))


def next_due(conn: sqlite3.Connection, urls: Sequence[str]) -> float | None:
    """When the earliest undelivered outbox row for `urls` is due (None: nothing to send)."""
    if not urls:
        return None
    row = conn.execute("SELECT min(max(o.next_attempt_at, coalesce(o.lease_until, 0))) FROM"
                       f" outbox o WHERE o.delivered_at IS NULL AND {_url_filter(urls)}",
                       tuple(urls)).fetchone()
    return row[0]


def outbox_counts(conn: sqlite3.Connection, urls: Sequence[str]) -> dict[str, int]:
    """pending and delivered rows; held: pending rows for URLs not in `urls` (not sent)."""
    configured = _url_filter(urls) if urls else "0"
    pending, delivered, held = conn.execute(
        "SELECT count(*) FILTER (WHERE o.delivered_at IS NULL),"
        " count(*) FILTER (WHERE o.delivered_at IS NOT NULL),"
        f" count(*) FILTER (WHERE o.delivered_at IS NULL AND NOT ({configured})) FROM outbox o",
        tuple(urls)).fetchone()
    return {"pending": pending, "delivered": delivered, "held": held}


def now() -> float:
    return time.time()
