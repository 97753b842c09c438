"""Alerts: when an asset's failure probability crosses its threshold, and their delivery.

`evaluate` runs inside the ingest transaction: an asset whose newest forecast reaches its
threshold while it was below raises one alert (stored, and queued in the outbox once per
webhook URL); it re-arms when a later forecast falls below the threshold again. So one crossing
gives one alert, however many readings follow.

`Dispatcher` is a thread in every worker that POSTs due outbox rows: JSON body, signed with
HMAC-SHA256 over "<timestamp>.<body>" (`X-RUL-Signature: sha256=<hex>`, `X-RUL-Timestamp`),
the alert's id in `X-RUL-Alert-Id`. A 2xx answer marks the row delivered; anything else retries
with exponential backoff (1 s, 2 s, 4 s, ... up to RUL_WEBHOOK_MAX_BACKOFF, with jitter). Rows
are leased while being sent, so two workers never send the same row at once; a worker killed
mid-send leaves its lease to expire and another worker sends it again. Delivery is therefore
at-least-once in the worst case (a kill between the receiver's 2xx and our commit): receivers
deduplicate on X-RUL-Alert-Id, which is stable across retries.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import logging
import random
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from service import storage
from service.requests import check_unknown_query, query_int, query_text
from service.settings import Settings
from service.storage import Store

log = logging.getLogger("rul.service.alerts")

SIGNATURE_HEADER = "X-RUL-Signature"
TIMESTAMP_HEADER = "X-RUL-Timestamp"
ALERT_ID_HEADER = "X-RUL-Alert-Id"
POLL_SECONDS = 1.0
CLAIM_BATCH = 50

_wake = threading.Event()


def effective_threshold(asset: dict[str, Any], settings: Settings) -> float:
    """The asset's own alert threshold, else the global RUL_ALERT_THRESHOLD."""
    own = asset["alert_threshold"]
    return settings.alert_threshold if own is None else own


def evaluate(conn: Any, settings: Settings, asset: dict[str, Any],
             forecast: dict[str, Any] | None, now: float) -> dict[str, Any] | None:
    """Raise (store and queue) an alert if `forecast` crosses the asset's threshold upward."""
    if forecast is None or forecast["cycle"] != asset["last_cycle"]:
        return None  # only the newest cycle speaks for the asset's state
    threshold = effective_threshold(asset, settings)
    above = forecast["failure_probability"] >= threshold
    if above == asset["alerting"]:
        return None
    storage.set_alerting(conn, asset["asset_id"], above)
    if not above:
        return None  # re-armed: the next crossing alerts again
    alert = {
        "type": "failure_probability_threshold_crossed",
        "alert_id": uuid.uuid4().hex,
        "asset_id": asset["asset_id"],
        "cycle": forecast["cycle"],
        "failure_probability": forecast["failure_probability"],
        "threshold": threshold,
        "horizon": forecast["horizon"],
        "rul": forecast["rul"],
        "rul_quantiles": forecast["rul_quantiles"],
        "model": forecast["model"],
        "model_version": forecast["model_version"],
        "created_at": now,
    }
    storage.insert_alert(conn, alert, settings.webhook_urls, now)
    return alert


def recent(store: Store, settings: Settings, params: Mapping[str, Any]) -> dict[str, Any]:
    """`GET /v1/alerts?asset_id=&limit=`: alerts, newest first, and the outbox's state."""
    check_unknown_query(params, ["asset_id", "limit"])
    limit = query_int(params, "limit", 100, minimum=1, maximum=settings.history_limit)
    conn = store.connection()
    return {"alerts": storage.list_alerts(conn, query_text(params, "asset_id"), limit),
            "outbox": storage.outbox_counts(conn, settings.webhook_urls)}


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The X-RUL-Signature value: HMAC-SHA256 of "<timestamp>.<body>" under the secret."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    """What a receiver checks (constant-time); shipped for receivers written in Python."""
    return hmac.compare_digest(sign(secret, timestamp, body).encode(),
                               signature.encode("utf-8", "replace"))


def backoff(attempts: int, maximum: float) -> float:
    """Seconds before retry number `attempts` (1, 2, 4, ... capped), with 50-100 % jitter."""
    return min(maximum, 2.0 ** max(0, attempts - 1)) * random.uniform(0.5, 1.0)


Sender = Callable[[str, bytes, dict[str, str], float], int]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # Following a redirect would turn the POST into a GET without the alert, and a 2xx from
    # there would count it delivered: a 3xx is a failed delivery, retried like any other.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
    """POST `body` to `url`; the HTTP status, redirects not followed (raises OSError for no
    answer at all)."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with _OPENER.open(request, timeout=timeout) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def deliver_due(store: Store, settings: Settings, *, send: Sender = post,
                observe: Callable[[str], None] = lambda outcome: None) -> tuple[int, int]:
    """Send due outbox rows once each (at most CLAIM_BATCH): (delivered, failed)."""
    delivered = failed = 0
    lease = 2 * settings.webhook_timeout + 5
    for _ in range(CLAIM_BATCH):
        # One row per claim: a lease covers one delivery. Rows claimed together would wait
        # behind each other's slow deliveries, outlive their leases, and be claimed and sent
        # a second time by another worker.
        with store.transaction() as conn:
            claimed = storage.claim_due(conn, storage.now(), lease, 1, settings.webhook_urls)
        if not claimed:
            break
        (row_id, alert_id, url, payload, attempts), = claimed
        body = payload.encode()
        timestamp = str(int(time.time()))
        headers = {"Content-Type": "application/json", ALERT_ID_HEADER: alert_id,
                   TIMESTAMP_HEADER: timestamp, "User-Agent": "rul-service"}
        if settings.webhook_secret:
            headers[SIGNATURE_HEADER] = sign(settings.webhook_secret, timestamp, body)
        status: int | None = None
        try:
            status = send(url, body, headers, settings.webhook_timeout)
            error = None if 200 <= status < 300 else f"HTTP {status}"
        # HTTPException: a receiver that does not speak HTTP (BadStatusLine) or a URL that
        # does not parse (InvalidURL) fails like a refused connection, with the backoff.
        except (OSError, ValueError, http.client.HTTPException) as exc:
            error = f"{type(exc).__name__}: {exc}"
        with store.transaction() as conn:
            if error is None:
                storage.mark_delivered(conn, row_id, status, storage.now())
            else:
                retry = storage.now() + backoff(attempts + 1, settings.webhook_max_backoff)
                storage.mark_failed(conn, row_id, status, error, retry)
        if error is None:
            delivered += 1
            observe("sent")
        else:
            failed += 1
            observe("failed")
            log.warning("alert %s to %s failed (attempt %d): %s", alert_id, url, attempts + 1,
                        error)
    return delivered, failed


def wake_dispatcher() -> None:
    """Tell this process's dispatcher a new alert is queued (others find it within 1 s)."""
    _wake.set()


class Dispatcher(threading.Thread):
    """Delivers the outbox in the background until `stop()`."""

    def __init__(self, store: Store, settings: Settings,
                 observe: Callable[[str], None] = lambda outcome: None) -> None:
        super().__init__(name="rul-webhooks", daemon=True)
        self.store = store
        self.settings = settings
        self.observe = observe
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                deliver_due(self.store, self.settings, observe=self.observe)
                due = storage.next_due(self.store.connection(), self.settings.webhook_urls)
            except Exception:  # the database may be busy or gone for a moment: keep going
                log.exception("webhook delivery round failed")
                due = None
            wait = POLL_SECONDS if due is None else min(POLL_SECONDS, max(0.0, due - time.time()))
            _wake.wait(wait)
            _wake.clear()

    def stop(self) -> None:
        self._stopping.set()
        _wake.set()
