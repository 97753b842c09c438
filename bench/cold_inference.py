"""One-window onnxruntime latency, hot and cold: why a served predict costs more than a loop.

A server answers one request at a time with a pause in between (the client, the kernel's
network stack, the other worker run meanwhile), so each model run may start with cold caches.
This times `Forecaster.predict_windows` on one window back to back, after a short sleep, and
after reading 16 MB of other memory.

    python bench/cold_inference.py [--model M.onnx] [--runs 500]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from rul.forecaster import Forecaster, default_model_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=default_model_path())
    parser.add_argument("--runs", type=int, default=500)
    args = parser.parse_args()
    model = Forecaster.load(args.model, threads=1)
    window = np.random.default_rng(0).normal(
        500, 10, (1, model.window, len(model.features))).astype(np.float32)
    other = np.ones(16_000_000 // 8)

    def median_us(before: object) -> float:
        times = []
        for _ in range(args.runs):
            before()
            start = time.perf_counter()
            model.predict_windows(window)
            times.append(time.perf_counter() - start)
        return float(np.median(times)) * 1e6

    model.predict_windows(window)
    print(f"{model.path.name}, 1 onnxruntime thread, median of {args.runs} runs")
    print(f"back to back        {median_us(lambda: None):8.1f} us")
    print(f"after 0.5 ms sleep  {median_us(lambda: time.sleep(0.0005)):8.1f} us")
    print(f"after 16 MB read    {median_us(other.sum):8.1f} us")


if __name__ == "__main__":
    main()
