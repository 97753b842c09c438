"""Load on the HTTP service: requests/s and latency for health, single and batch predict.

Starts `rul serve` (auth, validation and metrics on, as deployed) on loopback and drives it with
wrk (Debian package `wrk`) on the same machine, so client and server share the cores: the
numbers are a floor. Prints one table; `--json` also writes the raw numbers.

    python bench/service_load.py [--workers 2] [--connections 1 4 16] [--duration 10]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
KEY = "bench-key"

LUA = """
wrk.method = "{method}"
wrk.headers["X-API-Key"] = "{key}"
wrk.headers["Content-Type"] = "{content_type}"
{body}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, workers: int, threads: int, db: Path) -> subprocess.Popen:
    env = {**os.environ, "RUL_API_KEYS": KEY, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(
        [sys.executable, "-m", "rul.cli", "serve", "--port", str(port), "--workers",
         str(workers), "--threads", str(threads), "--db", str(db)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=1):
                return server
        except OSError:
            if server.poll() is not None:
                raise SystemExit(server.stderr.read().decode()) from None
            time.sleep(0.2)
    raise SystemExit("the server did not come up in 60 s")


def features(port: int) -> tuple[list[str], int]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models",
                                     headers={"X-API-Key": KEY})
    with urllib.request.urlopen(request) as answer:
        model = json.load(answer)["models"][0]
    return model["features"], model["window"]


def wrk(url: str, connections: int, duration: int, script: Path | None) -> dict[str, float]:
    command = ["wrk", "-t", str(min(connections, 2)), "-c", str(connections), "-d",
               f"{duration}s", "--latency", url]
    if script is not None:
        command += ["-s", str(script)]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    latency = {p: _ms(re.search(rf"^\s+{p}%\s+([\d.]+\w+)", out, re.M).group(1))
               for p in ("50", "99")}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50_ms": latency["50"], "p99_ms": latency["99"],
            "non_2xx": int(errors.group(1)) if errors else 0}


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads/worker")
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--batch", type=int, default=100, help="windows per JSON batch")
    parser.add_argument("--npy-batch", type=int, default=1000, help="windows per .npy batch")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")

    tmp = Path(tempfile.mkdtemp(prefix="rul-bench-"))
    port = free_port()
    server = start_server(port, args.workers, args.threads, tmp / "bench.db")
    try:
        names, window = features(port)
        rng = np.random.default_rng(0)
        rows = [{n: float(v) for n, v in zip(names, rng.normal(500, 10, len(names)),
                                                  strict=True)}
                for _ in range(window)]
        if "cycle" in names:  # a model that takes the asset's age: cycles 101, 102, ...
            for i, row in enumerate(rows):
                row["cycle"] = 101 + i
        single = json.dumps({"readings": rows})
        batch = json.dumps({"assets": [{"asset_id": f"a{i}", "window": [
            [r[n] for n in names] for r in rows]} for i in range(args.batch)]})
        npy = io.BytesIO()
        windows = rng.normal(500, 10, (args.npy_batch, window, len(names)))
        if "cycle" in names:
            windows[:, :, names.index("cycle")] = np.arange(101, 101 + window)
        np.save(npy, windows.astype(np.float32))
        (tmp / "batch.npy").write_bytes(npy.getvalue())

        def script(name: str, method: str, content_type: str, body: str) -> Path:
            path = tmp / f"{name}.lua"
            path.write_text(LUA.format(method=method, key=KEY, content_type=content_type,
                                       body=body))
            return path

        cases = {
            "health": ("/v1/health", None, 1),
            "predict": ("/v1/predict", script("single", "POST", "application/json",
                                               f"wrk.body = {json.dumps(single)}"), 1),
            f"batch JSON x{args.batch}": ("/v1/predict/batch", script(
                "batch", "POST", "application/json", f"wrk.body = {json.dumps(batch)}"),
                args.batch),
            f"batch .npy x{args.npy_batch}": ("/v1/predict/batch", script(
                "npy", "POST", "application/x-npy",
                f'local f = io.open("{tmp / "batch.npy"}", "rb")\n'
                'wrk.body = f:read("*all")\nf:close()'), args.npy_batch),
        }
        results = []
        print(f"{args.workers} workers x {args.threads} onnxruntime thread(s), auth + metrics "
              f"on, wrk on the same {os.cpu_count()} cores, {args.duration} s per cell")
        print(f"{'case':<22} {'conn':>4} {'req/s':>9} {'windows/s':>10} {'p50 ms':>8} "
              f"{'p99 ms':>8} {'x health':>8}")
        health_rps: dict[int, float] = {}
        for name, (path, lua, windows) in cases.items():
            for connections in args.connections:
                r = wrk(f"http://127.0.0.1:{port}{path}", connections, args.duration, lua)
                if name == "health":
                    health_rps[connections] = r["rps"]
                ratio = r["rps"] / health_rps[connections]
                results.append({"case": name, "connections": connections,
                                "windows_per_s": r["rps"] * windows, "x_health": ratio, **r})
                flag = f"  ({r['non_2xx']} non-2xx!)" if r["non_2xx"] else ""
                print(f"{name:<22} {connections:>4} {r['rps']:>9.0f} {r['rps'] * windows:>10.0f}"
                      f" {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {ratio:>8.2f}{flag}")
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
