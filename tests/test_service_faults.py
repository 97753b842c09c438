"""The service under faults: concurrent writers, a killed worker, a dead webhook receiver,
a restart, and models or databases it must refuse at startup. All through real processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from rul.forecaster import Forecaster, default_model_path
from rul.loaders import load_cmapss
from tests.service_helpers import API_KEY, Receiver, ServiceProcess

pytestmark = pytest.mark.slow

SECRET = "s3cret"


@pytest.fixture(scope="module")
def model() -> Forecaster:
    return Forecaster.load(default_model_path())


@pytest.fixture(scope="module")
def engines(cmapss_dir: Path, model: Forecaster) -> dict[int, list[dict]]:
    """FD001 train engines 1-3 as streamed readings (all three end past their threshold)."""
    train = load_cmapss(cmapss_dir, "FD001").train.frame
    out = {}
    for engine in (1, 2, 3):
        frame = train[train.asset_id == engine]
        out[engine] = [{**dict(zip(model.features, map(float, row), strict=True)),
                        "cycle": int(c)}  # whole, also where the model reads it as the age
                       for c, row in zip(frame.cycle, frame[model.features].to_numpy(),
                                         strict=True)]
    return out


def _post_cycles(port: int, asset: str, rows: list[dict]) -> list[int]:
    server = ServiceProcess(Path("unused"), port=port)
    return [server.request("POST", f"/v1/assets/{asset}/readings", {"readings": [row]}).status
            for row in rows]


def test_concurrent_ingestion_from_several_processes(tmp_path: Path,
                                                     engines: dict[int, list[dict]]) -> None:
    server = ServiceProcess(tmp_path / "s.db").start()
    try:
        rows = engines[1][:80]
        # Four client processes interleave cycles of one asset and each fill their own.
        jobs = [("shared", rows[k::4]) for k in range(4)]
        jobs += [(f"own-{k}", rows[:40]) for k in range(4)]
        with ProcessPoolExecutor(4) as pool:
            statuses = list(pool.map(_post_cycles, [server.port] * len(jobs),
                                     [a for a, _ in jobs], [r for _, r in jobs]))
        assert all(s == 200 for batch in statuses for s in batch), statuses
        shared = server.request("GET", "/v1/assets/shared").json()
        assert shared["n_readings"] == 80 and shared["last_cycle"] == 80
        history = server.request("GET", "/v1/assets/shared/history?limit=50").json()
        assert [r["cycle"] for r in history["readings"]] == list(range(1, 51))
        for k in range(4):
            assert server.request("GET", f"/v1/assets/own-{k}").json()["n_readings"] == 40
        # The newest forecast is for the newest cycle, whatever order the writers came in.
        assert server.request("GET", "/v1/assets/shared/forecast").json()["cycle"] == 80
    finally:
        server.stop()


def test_killed_worker_under_load_the_server_keeps_answering(
        tmp_path: Path, engines: dict[int, list[dict]], model: Forecaster) -> None:
    server = ServiceProcess(tmp_path / "s.db").start()
    body = {"readings": [{k: row[k] for k in model.features} for row in engines[1][:30]]}
    results: list[int] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                results.append(server.request("POST", "/v1/predict", body, timeout=10).status)
            except OSError:
                results.append(-1)  # the connection the killed worker held

    threads = [threading.Thread(target=load) for _ in range(3)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        victim = server.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        time.sleep(3.0)
        stop.set()
        for thread in threads:
            thread.join()
        after_kill = results[len(results) // 2:]
        assert len(results) > 50
        assert sum(s != 200 for s in results) <= 3, results.count(-1)
        assert all(s == 200 for s in after_kill[-20:])
        pids = server.wait_workers()
        assert victim not in pids and len(pids) == 2  # gunicorn replaced it
        assert server.request("GET", "/v1/ready").status == 200
    finally:
        stop.set()
        server.stop()


def test_dead_receiver_and_restart_lose_no_alert(tmp_path: Path,
                                                 engines: dict[int, list[dict]]) -> None:
    """Receiver down while three assets cross; the server restarts; the receiver comes back:
    each alert arrives exactly once, signed, and readings survive the restart."""
    receiver = Receiver()  # not started: its port refuses connections
    env = {"RUL_WEBHOOK_URLS": receiver.url, "RUL_WEBHOOK_SECRET": SECRET,
           "RUL_WEBHOOK_MAX_BACKOFF": "1"}
    db = tmp_path / "s.db"
    server = ServiceProcess(db, env=env).start()
    try:
        raised = []
        for engine, rows in engines.items():
            for start in range(0, len(rows), 40):
                answer = server.request("POST", f"/v1/assets/engine-{engine}/readings",
                                        {"readings": rows[start:start + 40]}).json()
                if answer["alert"]:
                    raised.append(answer["alert"]["alert_id"])
        assert len(raised) == 3
        time.sleep(2.0)  # several failed attempts
        pending = server.request("GET", "/v1/alerts").json()["outbox"]
        assert pending == {"pending": 3, "delivered": 0, "held": 0}
    finally:
        server.stop()

    restarted = ServiceProcess(db, env=env, port=server.port).start()
    try:
        assert restarted.request("GET", "/v1/assets/engine-1").json()["n_readings"] == len(
            engines[1])
        receiver.start()
        received = receiver.wait_for(3, timeout=30)
        time.sleep(2.5)  # a duplicate would show up by now
        ids = [json.loads(body)["alert_id"] for _, body in receiver.received]
        assert sorted(ids) == sorted(raised)
        for headers, body in receiver.received:
            assert headers["x-rul-alert-id"] == json.loads(body)["alert_id"]
        assert len(received) == 3
        outbox = restarted.request("GET", "/v1/alerts").json()["outbox"]
        assert outbox == {"pending": 0, "delivered": 3, "held": 0}
        # Streaming the same readings again raises nothing new.
        again = restarted.request("POST", "/v1/assets/engine-1/readings",
                                  {"readings": engines[1][-5:]}).json()
        assert again["duplicates"] == 5 and again["alert"] is None
    finally:
        restarted.stop()
        receiver.stop()


def _serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rul.cli", "serve", *args],
                          env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=60)


def test_startup_refuses_missing_or_corrupt_models_and_bad_settings(tmp_path: Path,
                                                                    model: Forecaster) -> None:
    missing = _serve("--model", str(tmp_path / "none.onnx"), "--db", str(tmp_path / "a.db"))
    assert missing.returncode == 2 and "model file not found" in missing.stderr
    corrupt = tmp_path / "corrupt.onnx"
    shutil.copy(model.path, corrupt)
    shutil.copy(model.path.with_suffix(".json"), corrupt.with_suffix(".json"))
    data = bytearray(corrupt.read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    refused = _serve("--model", str(corrupt), "--db", str(tmp_path / "a.db"))
    assert refused.returncode == 2 and "cannot serve" in refused.stderr
    assert str(corrupt) in refused.stderr
    no_folder = _serve("--db", str(tmp_path / "no" / "such" / "s.db"))
    assert no_folder.returncode == 2 and "does not exist" in no_folder.stderr
    bad_env = _serve("--db", str(tmp_path / "a.db"), env={"RUL_ALERT_THRESHOLD": "high"})
    assert bad_env.returncode == 2 and "RUL_ALERT_THRESHOLD" in bad_env.stderr
    # Nothing of the refused starts was left listening or half-made.
    assert not (tmp_path / "no").exists()


def test_several_models_by_name(tmp_path: Path, cmapss_dir: Path, model: Forecaster) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    for subset in ("fd001", "fd003"):
        for suffix in (".onnx", ".json"):
            shutil.copy(model.path.parent / f"cmapss-{subset}{suffix}", folder)
    scratch = tmp_path / "tmp"  # where the server makes its metrics folder
    scratch.mkdir()
    server = ServiceProcess(tmp_path / "s.db", args=["--models-dir", str(folder)],
                            env={"TMPDIR": str(scratch)}).start()
    try:
        assert len(list(scratch.glob("rul-metrics-*"))) == 1
        names = [m["name"] for m in server.request("GET", "/v1/models").json()["models"]]
        assert names == ["cmapss-fd001", "cmapss-fd003"]
        fd003 = Forecaster.load(folder / "cmapss-fd003.onnx")
        test = load_cmapss(cmapss_dir, "FD003").test.frame
        engine = test[test.asset_id == 1][fd003.features].to_numpy()[-fd003.window:]
        rows = [{f: int(v) if f == "cycle" else float(v)
                 for f, v in zip(fd003.features, row, strict=True)} for row in engine]
        answer = server.request("POST", "/v1/predict", {"readings": rows,
                                                        "model": "cmapss-fd003"}).json()
        window = np.array([[row[f] for f in fd003.features] for row in rows], np.float32)
        assert answer["model"] == "cmapss-fd003" and answer["model_version"] == fd003.version
        assert answer["rul"] == pytest.approx(float(fd003.predict_windows(window[None]).rul[0]),
                                              abs=1e-3)
        # An asset switched between models whose features differ: readings sent under FD001's
        # model lack two of FD003's sensors, so switching back must be refused while they sit
        # in the newest window, not fail each later reading.
        fd001 = Forecaster.load(folder / "cmapss-fd001.onnx")
        path = "/v1/assets/switched"
        for cycle in (1, 10):
            row = {**rows[cycle], "cycle": cycle}
            assert server.request("POST", f"{path}/readings", {
                "readings": [row], "model": "cmapss-fd003"}).status == 200
        assert server.request("PUT", path, {"model": "cmapss-fd001"}).status == 200
        gap = {**{f: rows[5][f] for f in fd001.features}, "cycle": 5}
        assert server.request("POST", f"{path}/readings", {"readings": [gap]}).status == 200
        refused = server.request("PUT", path, {"model": "cmapss-fd003"})
        assert refused.status == 409, refused.body
        assert "cycle 5 lacks ['sensor_6', 'sensor_10']" in refused.json()["error"]["message"]
        assert server.request("GET", path).json()["model"] == "cmapss-fd001"
        row = {**{f: rows[11][f] for f in fd001.features}, "cycle": 11}
        assert server.request("POST", f"{path}/readings", {"readings": [row]}).status == 200
    finally:
        server.stop()
    assert list(scratch.glob("rul-metrics-*")) == []  # the metrics folder goes with the server


def _raw(port: int, data: bytes, timeout: float = 10) -> tuple[int, dict]:
    """Send bytes as they are (no HTTP client to tidy them up); the status and JSON body."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), answer
    return int(head.split()[1]), json.loads(body)


def test_stalled_and_malformed_requests_and_a_worker_exit(tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"  # where the server makes its metrics folder
    scratch.mkdir()
    # One worker: the request after a stalled one must find it free.
    server = ServiceProcess(tmp_path / "s.db", workers=1, args=["--access-log"],
                            env={"RUL_READ_TIMEOUT": "1", "TMPDIR": str(scratch)}).start()
    key = f"X-API-Key: {API_KEY}\r\n".encode()
    try:
        # A body that stops arriving: 408 after RUL_READ_TIMEOUT, the worker free again.
        started = time.time()
        status, body = _raw(server.port, b"POST /v1/predict HTTP/1.1\r\nHost: x\r\n" + key
                            + b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
                            + b'{"readings": [')
        assert (status, body["error"]["field"]) == (408, "body")
        assert "RUL_READ_TIMEOUT" in body["error"]["message"] and time.time() - started < 10
        assert server.request("GET", "/v1/health", timeout=5).status == 200
        # Headers that stop arriving: the same 408, not gunicorn killing the worker (500).
        started = time.time()
        status, body = _raw(server.port, b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")
        assert status == 408 and "headers did not arrive" in body["error"]["message"]
        assert time.time() - started < 10
        assert server.request("GET", "/v1/health", timeout=5).status == 200
        # A body trickled in a byte at a time, each byte well within any per-read timeout.
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\n" + key
                         + b"Content-Length: 100\r\n\r\n")
            started = time.time()
            answer = b""
            for _ in range(50):  # 10 s of trickle, unless the server answers first
                try:
                    sock.sendall(b" ")
                except OSError:  # the server answered and closed
                    break
                time.sleep(0.2)
                sock.setblocking(False)
                try:
                    answer += sock.recv(65536)
                except BlockingIOError:
                    pass
                finally:
                    sock.setblocking(True)
                if answer:
                    break
            assert b" 408 " in answer.split(b"\r\n")[0], answer
            assert time.time() - started < 5
        assert server.request("GET", "/v1/health", timeout=5).status == 200
        # A body shorter than its Content-Length (the client closed its side): 400.
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\n" + key
                         + b"Content-Length: 100\r\n\r\n{}")
            sock.shutdown(socket.SHUT_WR)
            assert b" 400 " in sock.recv(65536).split(b"\r\n")[0]
        # Requests gunicorn cannot parse get the API's JSON error shape, with gunicorn's status;
        # a bad chunk reaches the app's reading of the body, also a 400.
        chunked = (b"POST /v1/predict HTTP/1.1\r\nHost: x\r\n" + key
                   + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n")
        bad_name = b"GET /v1/ready HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n"
        two_lengths = (b"GET /v1/health HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
                       b"Content-Length: 2\r\n\r\n")
        for data, expected in ((chunked, 400), (b"NOT HTTP AT ALL\r\n\r\n", 400),
                               (bad_name, 400), (two_lengths, 400),
                               (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414)):
            status, body = _raw(server.port, data)
            assert status == expected and body["error"]["status"] == expected, body
            assert body["error"]["message"]
        # A worker that exits (a restart, a timeout) leaves through the code that started the
        # server: the master, and the metrics folder the workers share, must outlive it.
        victim = server.worker_pids()[0]
        os.kill(victim, signal.SIGTERM)
        deadline = time.time() + 30
        while victim in server.worker_pids() or len(server.worker_pids()) < 1:
            assert time.time() < deadline, "the worker was not replaced"
            time.sleep(0.1)
        assert server.process.poll() is None
        assert len(list(scratch.glob("rul-metrics-*"))) == 1
        assert server.request("GET", "/metrics").status == 200
        assert server.request("GET", "/v1/ready").status == 200
    finally:
        server.stop()
    log = server.output()
    assert "Traceback" not in log
    assert '"POST /v1/predict HTTP/1.1" 400' in log  # the app's answers are in the access log,
    assert '"GET /v1/health HTTP/1.1" 400' in log  # and so are gunicorn's


def test_a_locked_database_is_a_503_not_a_killed_worker(
        tmp_path: Path, engines: dict[int, list[dict]]) -> None:
    server = ServiceProcess(tmp_path / "s.db").start()
    body = {"readings": engines[1][:3]}
    lock = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    try:
        workers = server.worker_pids()
        lock.execute("BEGIN EXCLUSIVE")  # a backup or an outside tool holding the database
        started = time.time()
        answer = server.request("POST", "/v1/assets/locked/readings", body)
        waited = time.time() - started
        assert answer.status == 503, answer.body
        assert json.loads(answer.body)["error"]["status"] == 503
        assert "retry-after" in answer.headers and 9 < waited < 25  # the 10 s busy timeout
        lock.execute("ROLLBACK")
        assert server.request("POST", "/v1/assets/locked/readings", body).status == 200
        assert sorted(server.worker_pids()) == sorted(workers)  # none was killed
    finally:
        lock.close()
        server.stop()
