"""The service through real HTTP: `rul serve` (gunicorn, 2 workers) started by the tests.

Readings are a real C-MAPSS engine (FD001 train, engine 1, 192 cycles), whose failure
probability under the shipped FD001 model crosses 0.5 near cycle 162 and stays above: so the
alert path is driven by real data and the real model, and a real receiver checks the webhook.
"""

from __future__ import annotations

import csv
import http.client
import io
import json
from pathlib import Path

import numpy as np
import pytest

from rul.forecaster import Forecaster, default_model_path
from rul.loaders import load_cmapss
from rul.windowing import make_windows
from service.alerts import verify
from tests.service_helpers import API_KEY, Receiver, ServiceProcess

pytestmark = pytest.mark.slow

SECRET = "webhook-secret"
MAX_ASSETS = 5
MAX_ROWS = 250  # above the 150 rows one call below streams, below 5 windows of 60
MAX_BODY = 300_000


@pytest.fixture(scope="module")
def model() -> Forecaster:
    return Forecaster.load(default_model_path())


@pytest.fixture(scope="module")
def engine(cmapss_dir: Path, model: Forecaster) -> np.ndarray:
    train = load_cmapss(cmapss_dir, "FD001").train.frame
    return train[train.asset_id == 1][model.features].to_numpy(np.float64)


@pytest.fixture(scope="module")
def receiver() -> Receiver:
    receiver = Receiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> ServiceProcess:
    db = tmp_path_factory.mktemp("service") / "service.db"
    server = ServiceProcess(db, env={
        "RUL_WEBHOOK_URLS": receiver.url, "RUL_WEBHOOK_SECRET": SECRET,
        "RUL_MAX_ASSETS": str(MAX_ASSETS), "RUL_MAX_BODY_BYTES": str(MAX_BODY),
        "RUL_MAX_ROWS": str(MAX_ROWS), "RUL_HISTORY_LIMIT": "50"}).start()
    yield server
    server.stop()


def readings(values: np.ndarray, features: list[str], first_cycle: int | None = None
             ) -> list[dict]:
    # JSON numbers as a plant sends them: cycles (the shipped FD001 model's age input) whole.
    rows = [{f: int(v) if f == "cycle" else float(v) for f, v in zip(features, row, strict=True)}
            for row in values]
    if first_cycle is not None:
        for i, row in enumerate(rows):
            row["cycle"] = first_cycle + i
    return rows


def error_of(answer, status: int) -> dict:
    assert answer.status == status, answer.body
    assert answer.headers["content-type"].startswith("application/json")
    error = answer.json()["error"]
    assert set(error) == {"status", "message", "field"}
    assert error["status"] == status and error["message"]
    return error


# --------------------------------------------------------------------------- health, auth


def test_health_is_open_and_everything_else_needs_a_key(server: ServiceProcess) -> None:
    assert server.request("GET", "/v1/health", key=None).json()["status"] == "ok"
    assert error_of(server.request("GET", "/v1/ready", key=None), 401)["field"] == \
        "header.X-API-Key"
    assert error_of(server.request("GET", "/v1/models", key="wrong"), 403)["field"] == \
        "header.X-API-Key"
    assert error_of(server.request("GET", "/metrics", key=None), 401)
    ready = server.request("GET", "/v1/ready").json()
    assert ready["status"] == "ready" and ready["database"] == "writable"
    assert ready["models"] == ["cmapss-fd001"]
    # HEAD, for probes that only read the status: every read-only route, same auth, no body.
    head = server.request("HEAD", "/v1/health", key=None)
    assert (head.status, head.body) == (200, b"")
    assert server.request("HEAD", "/v1/ready", key=None).status == 401
    assert server.request("HEAD", "/v1/ready").status == 200
    assert server.request("HEAD", "/v1/predict").status == 405


def test_models_and_card(server: ServiceProcess, model: Forecaster) -> None:
    models = server.request("GET", "/v1/models").json()
    assert models["default"] == "cmapss-fd001"
    (summary,) = models["models"]
    assert summary["features"] == model.features and summary["window"] == model.window
    assert summary["version"] == model.version
    card = server.request("GET", "/v1/models/cmapss-fd001").json()
    assert card["card"]["features"] == model.features
    sidecar = json.loads(model.path.with_suffix(".json").read_text())
    assert card["sha256"] == sidecar["sha256"]
    assert error_of(server.request("GET", "/v1/models/nope"), 404)["field"] == "path.name"


# --------------------------------------------------------------------------- predict


def test_predict_equals_the_forecaster(server: ServiceProcess, model: Forecaster,
                                       engine: np.ndarray) -> None:
    window = engine[100:100 + model.window]
    expected = model.predict_windows(window[None].astype(np.float32))
    by_name = server.request("POST", "/v1/predict",
                             {"readings": readings(window, model.features)}).json()
    by_matrix = server.request("POST", "/v1/predict", {"window": window.tolist(),
                                                       "model": "cmapss-fd001"}).json()
    for answer in (by_name, by_matrix):
        assert answer["model"] == "cmapss-fd001" and answer["model_version"] == model.version
        assert answer["rul"] == pytest.approx(float(expected.rul[0]), abs=1e-3)
        assert answer["failure_probability"] == pytest.approx(
            float(expected.failure_probability[0]), abs=1e-6)
        assert list(answer["rul_quantiles"]) == ["0.1", "0.5", "0.9"]
        assert answer["rul_quantiles"]["0.1"] == pytest.approx(
            float(expected.rul_quantiles[0, 0]), abs=1e-3)
        assert answer["horizon"] == model.horizon and answer["cycles_padded"] == 0


def test_short_history_is_padded(server: ServiceProcess, model: Forecaster,
                                 engine: np.ndarray) -> None:
    history = engine[:12]
    windows = make_windows(history.astype(np.float32), np.array([12]), model.window,
                           ends="last")
    expected = model.predict_windows(windows.array())
    answer = server.request("POST", "/v1/predict",
                            {"readings": readings(history, model.features)}).json()
    assert answer["cycles_padded"] == model.window - 12
    assert answer["rul"] == pytest.approx(float(expected.rul[0]), abs=1e-3)


def test_batch_json_and_npy_equal_single_predictions(server: ServiceProcess, model: Forecaster,
                                                     engine: np.ndarray) -> None:
    windows = np.stack([engine[end - model.window:end] for end in (model.window, 90, 150, 192)])
    expected = model.predict_windows(windows.astype(np.float32))
    batch = server.request("POST", "/v1/predict/batch", {"assets": [
        {"asset_id": f"e{i}", "window": w.tolist()} for i, w in enumerate(windows)]}).json()
    assert [p["asset_id"] for p in batch["predictions"]] == ["e0", "e1", "e2", "e3"]
    buffer = io.BytesIO()
    np.save(buffer, windows.astype(np.float32))
    npy = server.request("POST", "/v1/predict/batch", buffer.getvalue(),
                         headers={"Content-Type": "Application/X-NPY"}).json()  # any case
    for answers in (batch["predictions"], npy["predictions"]):
        got = np.array([a["rul"] for a in answers])
        np.testing.assert_allclose(got, expected.rul, atol=1e-3)
    assert [p["index"] for p in npy["predictions"]] == [0, 1, 2, 3]


@pytest.mark.parametrize(("body", "status", "field"), [
    (b"{not json", 400, "body"),
    (b'{"readings": [{"sensor_2": NaN}]}', 400, "body"),
    (b"", 400, "body"),
    (b"[1, 2]", 400, "body"),
    (b'{"readings": []}', 400, "readings"),
    (b'{"readings": "x"}', 400, "readings"),
    (b'{"readings": [1]}', 400, "readings[0]"),
    (b'{"readings": [{"sensor_2": 1}]}', 400, "readings[0].sensor_3"),
    (b'{"window": [[1, 2]]}', 400, "window"),
    (b'{"readings": [], "window": []}', 400, None),
    (b'{"readings": [{}], "extra": 1}', 400, "extra"),
    (b'{"window": [[1]], "model": "nope"}', 404, "model"),
    (b'{"window": [[1]], "model": 3}', 400, "model"),
])
def test_predict_refuses_bad_bodies(server: ServiceProcess, body: bytes, status: int,
                                    field: str | None) -> None:
    answer = server.request("POST", "/v1/predict", body,
                            headers={"Content-Type": "application/json"})
    assert error_of(answer, status)["field"] == field


def test_predict_refuses_bad_values(server: ServiceProcess, model: Forecaster,
                                    engine: np.ndarray) -> None:
    rows = readings(engine[:3], model.features)
    for bad, text in ((None, "finite number"), ("5", "finite number"), (True, "finite number"),
                      (1e39, "float32")):
        sent = [dict(row) for row in rows]
        sent[1]["sensor_4"] = bad
        error = error_of(server.request("POST", "/v1/predict", {"readings": sent}), 400)
        assert error["field"] == "readings[1].sensor_4" and text in error["message"]
    sent = [dict(row) for row in rows]
    sent[2]["sensor_1"] = 1.0  # not a feature of this model
    assert error_of(server.request("POST", "/v1/predict", {"readings": sent}),
                    400)["field"] == "readings[2].sensor_1"
    sent = [dict(row, cycle=c) for row, c in zip(rows, (3, 2, 4), strict=True)]
    assert error_of(server.request("POST", "/v1/predict", {"readings": sent}),
                    400)["field"] == "readings[1].cycle"
    # Valid float32, but so far out of range that the network overflows: 422, nothing stored.
    spike = [dict(row) for row in rows]
    spike[0]["sensor_8"] = 1e38
    assert error_of(server.request("POST", "/v1/predict", {"readings": spike}),
                    422)["field"] == "readings"
    streamed = [dict(row, cycle=i + 1) for i, row in enumerate(spike)]
    assert error_of(server.request("POST", "/v1/assets/spiky/readings", {"readings": streamed}),
                    422)["field"] == "readings"
    assert error_of(server.request("GET", "/v1/assets/spiky"), 404)
    window = engine[:model.window].tolist()
    window[4][2] = "x"
    assert error_of(server.request("POST", "/v1/predict", {"window": window}),
                    400)["field"] == "window[4][2]"


def test_limits_answer_413(server: ServiceProcess, model: Forecaster,
                           engine: np.ndarray) -> None:
    window = engine[:model.window].tolist()
    too_many = {"assets": [{"asset_id": i, "window": window} for i in range(MAX_ASSETS + 1)]}
    assert error_of(server.request("POST", "/v1/predict/batch", too_many), 413)["field"] == \
        "assets"
    # Refused from the Content-Length header, before the body is read.
    huge = b'{"readings": [' + b" " * MAX_BODY + b"]}"
    assert error_of(server.request("POST", "/v1/predict", huge), 413)["field"] == "body"
    # Chunked, with no Content-Length: refused once the limit is passed.
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("POST", "/v1/predict", body=iter([b'{"readings": ['] + [b" " * 65536] * (
            MAX_BODY // 65536 + 1) + [b"]}"]), encode_chunked=True,
            headers={"X-API-Key": API_KEY, "Content-Type": "application/json",
                     "Transfer-Encoding": "chunked"})
        answer = conn.getresponse()
        assert answer.status == 413 and json.loads(answer.read())["error"]["field"] == "body"
    finally:
        conn.close()
    # Too many rows of readings, in one asset's call or across a batch's windows.
    row = dict(zip(model.features, map(float, engine[0]), strict=True))
    many = {"readings": [row] * (MAX_ROWS + 1)}
    assert error_of(server.request("POST", "/v1/predict", many), 413)["field"] == "readings"
    windows = {"assets": [{"asset_id": i, "window": window} for i in range(MAX_ASSETS)]}
    refused = error_of(server.request("POST", "/v1/predict/batch", windows), 413)
    assert refused["field"] == f"assets[{MAX_ROWS // model.window}]"
    assert "RUL_MAX_ROWS" in refused["message"]
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((MAX_ASSETS + 1, model.window, len(model.features)), np.float32))
    assert error_of(server.request("POST", "/v1/predict/batch", buffer.getvalue(),
                                   headers={"Content-Type": "application/x-npy"}), 413)
    broken = server.request("POST", "/v1/predict/batch", b"not npy",
                            headers={"Content-Type": "application/x-npy"})
    assert error_of(broken, 400)["field"] == "body"
    duplicate = {"assets": [{"asset_id": "a", "window": window}] * 2}
    assert error_of(server.request("POST", "/v1/predict/batch", duplicate),
                    400)["field"] == "assets[1].asset_id"


def test_unknown_paths_methods_and_queries(server: ServiceProcess) -> None:
    assert error_of(server.request("GET", "/v2/predict"), 404)["message"].startswith(
        "no such endpoint")
    assert "not allowed" in error_of(server.request("DELETE", "/v1/models"), 405)["message"]
    assert error_of(server.request("GET", "/v1/assets?limit=abc"), 400)["field"] == \
        "query.limit"
    assert error_of(server.request("GET", "/v1/assets?colour=red"), 400)["field"] == \
        "query.colour"
    # A parameter given twice is refused; a comma is part of the value (ids may hold one).
    for path, field in (("/v1/assets?after=a&after=b", "query.after"),
                        ("/v1/alerts?asset_id=a&asset_id=b", "query.asset_id"),
                        ("/v1/report?format=csv&format=html", "query.format")):
        assert error_of(server.request("GET", path), 400)["field"] == field
    assert server.request("GET", "/v1/alerts?asset_id=a,b").status == 200
    assert server.request("GET", "/v1/assets?after=a,b").status == 200
    # Percent-escapes that are not UTF-8 would all decode to one asset id: refused.
    for path in ("/v1/assets/%FF%FE", "/v1/assets/%80%80/history"):
        assert error_of(server.request("GET", path), 400)["field"] == "path.asset_id"


# --------------------------------------------------------------------------- streaming


def test_stream_history_alert_report(server: ServiceProcess, receiver: Receiver,
                                     model: Forecaster, engine: np.ndarray) -> None:
    path = "/v1/assets/engine-1/readings"
    rows = readings(engine, model.features, first_cycle=1)
    assert error_of(server.request("GET", "/v1/assets/engine-1"), 404)["field"] == \
        "path.asset_id"
    # Cycles 1-150 in chunks: failure probability stays low, no alert.
    for start in range(0, 150, 50):
        answer = server.request("POST", path, {"readings": rows[start:start + 50]}).json()
        assert answer["stored"] == 50 and answer["duplicates"] == 0
        assert answer["forecast"]["cycle"] == start + 50 and answer["alert"] is None
    # Repeats are idempotent; a changed value for a stored cycle is refused, nothing kept.
    again = server.request("POST", path, {"readings": rows[140:150]}).json()
    assert again["stored"] == 0 and again["duplicates"] == 10
    changed = [dict(row) for row in rows[149:152]]
    changed[0]["sensor_2"] += 1.0
    assert error_of(server.request("POST", path, {"readings": changed}), 409)["field"] == \
        "readings[0].sensor_2"
    assert server.request("GET", "/v1/assets/engine-1").json()["last_cycle"] == 150
    bad_cycle = [dict(rows[150], cycle=-1)]
    assert error_of(server.request("POST", path, {"readings": bad_cycle}), 400)["field"] == \
        "readings[0].cycle"
    no_cycle = [{k: v for k, v in rows[150].items() if k != "cycle"}]
    assert error_of(server.request("POST", path, {"readings": no_cycle}), 400)["field"] == \
        "readings[0].cycle"

    # Cycle by cycle from 151 on: the crossing near 162 raises exactly one alert.
    alerts = []
    for row in rows[150:]:
        answer = server.request("POST", path, {"readings": [row]}).json()
        if answer["alert"] is not None:
            alerts.append(answer["alert"])
    assert len(alerts) == 1
    alert = alerts[0]
    assert alert["asset_id"] == "engine-1" and alert["failure_probability"] >= 0.5
    assert 155 <= alert["cycle"] <= 170

    # The forecast at every cycle matches the model on the same window.
    windows = make_windows(engine.astype(np.float32), np.array([len(engine)]), model.window,
                           ends="every")
    expected = model.predict_windows(windows.array())
    latest = server.request("GET", "/v1/assets/engine-1/forecast").json()
    assert latest["cycle"] == 192
    assert latest["rul"] == pytest.approx(float(expected.rul[-1]), abs=1e-3)

    # History: paginated, filtered by cycle range, readings as sent.
    page = server.request("GET", "/v1/assets/engine-1/history?from_cycle=100&limit=20").json()
    assert [r["cycle"] for r in page["readings"]] == list(range(100, 120))
    assert page["readings"][0]["sensor_2"] == rows[99]["sensor_2"]
    assert page["next_after_cycle"] == 119
    assert {f["cycle"] for f in page["forecasts"]} <= set(range(100, 120))
    following = server.request(
        "GET", f"/v1/assets/engine-1/history?from_cycle=100&limit=20&after_cycle="
        f"{page['next_after_cycle']}").json()
    assert following["readings"][0]["cycle"] == 120
    tail = server.request("GET", "/v1/assets/engine-1/history?from_cycle=185&to_cycle=400"
                          ).json()
    assert [r["cycle"] for r in tail["readings"]] == list(range(185, 193))
    assert [f["cycle"] for f in tail["forecasts"]] == list(range(185, 193))
    for forecast in tail["forecasts"]:
        assert forecast["rul"] == pytest.approx(float(expected.rul[forecast["cycle"] - 1]),
                                                abs=1e-3)
    assert error_of(server.request("GET", "/v1/assets/engine-1/history?limit=51"), 400)

    # The alert reached the receiver once, signed.
    received = receiver.wait_for(1)
    mine = [(h, b) for h, b in received if json.loads(b)["asset_id"] == "engine-1"]
    assert len(mine) == 1
    headers, body = mine[0]
    assert json.loads(body)["alert_id"] == alert["alert_id"] == headers["x-rul-alert-id"]
    assert verify(SECRET, headers["x-rul-timestamp"], body, headers["x-rul-signature"])
    listed = server.request("GET", "/v1/alerts?asset_id=engine-1").json()
    assert [a["alert_id"] for a in listed["alerts"]] == [alert["alert_id"]]

    # The fleet report ranks it; JSON, CSV and HTML agree.
    server.request("POST", "/v1/assets/engine-2/readings",
                   {"readings": readings(engine[:60], model.features, first_cycle=1)})
    report = server.request("GET", "/v1/report?lead_time=5").json()
    assert [a["asset_id"] for a in report["assets"]] == ["engine-1", "engine-2"]
    first = report["assets"][0]
    assert first["risk_rank"] == 1 and first["at_risk"] is True and first["last_cycle"] == 192
    assert first["recommended_cycle"] == 192 + max(
        0, int(np.floor(first["rul_quantiles"]["0.1"])) - 5)
    table = list(csv.DictReader(io.StringIO(
        server.request("GET", "/v1/report?format=csv&lead_time=5").body.decode())))
    assert [row["asset_id"] for row in table] == ["engine-1", "engine-2"]
    assert int(table[0]["recommended_cycle"]) == first["recommended_cycle"]
    page = server.request("GET", "/v1/report?format=html")
    assert page.headers["content-type"].startswith("text/html")
    assert b"engine-1" in page.body and b"<img" in page.body
    assert error_of(server.request("GET", "/v1/report?format=pdf"), 400)["field"] == \
        "query.format"

    listing = server.request("GET", "/v1/assets?limit=1").json()
    assert listing["count"] >= 2 and listing["next_after"] == listing["assets"][0]["asset_id"]


def test_per_asset_threshold(server: ServiceProcess, receiver: Receiver, model: Forecaster,
                             engine: np.ndarray) -> None:
    configured = server.request("PUT", "/v1/assets/engine-low", {"alert_threshold": 0.01})
    assert configured.json()["effective_alert_threshold"] == 0.01
    assert error_of(server.request("PUT", "/v1/assets/engine-low", {"alert_threshold": 2}),
                    400)["field"] == "alert_threshold"
    rows = readings(engine[:158], model.features, first_cycle=1)
    answer = server.request("POST", "/v1/assets/engine-low/readings", {"readings": rows}).json()
    # Cycle 158 is still below 0.5, but above this asset's own 0.01.
    assert 0.01 <= answer["forecast"]["failure_probability"] < 0.5
    assert answer["alert"] is not None and answer["alert"]["threshold"] == 0.01
    # The report marks it at risk by the same threshold as its alert.
    reported = {a["asset_id"]: a for a in server.request("GET", "/v1/report").json()["assets"]}
    assert reported["engine-low"]["alert_threshold"] == 0.01
    assert reported["engine-low"]["at_risk"] is True
    page = server.request("GET", "/v1/report?format=html").body.decode()
    assert "or the asset&#x27;s own threshold" in page or "or the asset's own threshold" in page


def test_metrics_count_requests_across_workers(server: ServiceProcess) -> None:
    before = _counter(server, "/v1/health")
    for _ in range(40):
        server.request("GET", "/v1/health")
    assert _counter(server, "/v1/health") == before + 40
    text = server.request("GET", "/metrics").body.decode()
    assert 'rul_inference_seconds_count{model="cmapss-fd001"}' in text
    assert "rul_http_request_duration_seconds_bucket" in text
    assert 'route="/v1/assets/{asset_id}/readings"' in text  # templates, not raw paths
    assert "engine-1" not in text
    assert 'rul_alert_deliveries_total{outcome="sent"}' in text


def _counter(server: ServiceProcess, route: str) -> float:
    text = server.request("GET", "/metrics").body.decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("rul_http_requests_total{") and f'route="{route}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_openapi_lists_every_route(server: ServiceProcess) -> None:
    document = server.request("GET", "/v1/openapi.json").json()
    assert document["openapi"].startswith("3.")
    for path in ("/v1/health", "/v1/ready", "/v1/models", "/v1/models/{name}", "/v1/predict",
                 "/v1/predict/batch", "/v1/assets", "/v1/assets/{asset_id}",
                 "/v1/assets/{asset_id}/readings", "/v1/assets/{asset_id}/history",
                 "/v1/assets/{asset_id}/forecast", "/v1/report", "/v1/openapi.json",
                 "/metrics", "/v1/alerts"):
        assert path in document["paths"], path
    assert API_KEY  # the server under test runs with auth on
