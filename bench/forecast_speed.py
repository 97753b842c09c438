"""Batch forecast speed: rul.batch.forecast_file over a simulated fleet file (prints numbers).

    PYTHONPATH=. .venv/bin/python bench/forecast_speed.py [--assets 100000] [--format parquet]
        [--chunk-rows 200000] [--threads N] [--model MODEL.onnx] [--dir DIR] [--seed 0]
        [--scheduler local]

Simulates `--assets` assets (rul.simulate's truncated test trajectories, like a fleet in
service: 31 cycles or more each), 5,000 at a time so the simulation stays small, and writes
them as one Parquet or CSV file (in --dir, kept; else a temporary folder). A fresh child
process, so that its peak RSS is the forecast's alone, then runs forecast_file on the file, and
Forecaster.predict_windows on as many prepared windows (real readings of the file) as there are
assets. Printed: rows, assets/s and windows/s end to end, the child's peak RSS before and after
the forecast (resource.getrusage), raw predict_windows windows/s of the same session, and the
ratio of the two (how much of the model's speed survives reading, validating and buffering the
file); then the raw speed with onnxruntime's default threads (every core), and the ratio to it.
Without --threads the forecast uses rul.batch.default_threads(), as `rul forecast` does.
With --scheduler (local: a local cluster of 2 worker processes, 1 onnxruntime thread each, as
`rul forecast --scheduler local`) the same file also goes through rul.distributed, timed the
same way (cluster start-up included, as a user meets it), and the two tables are compared.

100,000 assets (issue 6's target) simulate to about 11 million rows; use --assets 2000 for a
quick look. Timings move with other load on the machine (the load average is printed).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from rul.batch import DEFAULT_CHUNK_ROWS, default_threads, forecast_file_rows
from rul.forecaster import Forecaster, default_model_path
from rul.schema import ASSET_ID
from rul.simulate import SimulationConfig, simulate_trajectories, truncate_trajectories

PIECE = 5_000  # assets simulated at a time


def write_fleet(path: Path, assets: int, seed: int) -> int:
    """Simulate `assets` assets piece by piece into one file; returns the number of rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer, rows = None, 0
    try:
        for first in range(0, assets, PIECE):
            n = min(PIECE, assets - first)
            config = SimulationConfig(assets=n, seed=seed)
            rng = np.random.default_rng([seed, first])
            piece, _ = truncate_trajectories(simulate_trajectories(config, rng), rng,
                                             config.test_min_cycles)
            piece[ASSET_ID] += first
            rows += len(piece)
            if path.suffix == ".csv":
                piece.to_csv(path, mode="w" if first == 0 else "a", header=first == 0,
                             index=False)
                continue
            table = pa.Table.from_pandas(piece, preserve_index=False)
            writer = writer or pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
    return rows


def measure(path: Path, model_path: Path, chunk_rows: int, threads: int | None,
            scheduler: str | None = None) -> dict:
    """In the child: the forecast end to end, then the raw model on as many windows."""
    model = Forecaster.load(model_path, threads=threads or default_threads())
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    forecast, rows = forecast_file_rows(model, path, chunk_rows=chunk_rows)
    seconds = time.perf_counter() - started
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    dask = measure_dask(path, model_path, scheduler, forecast) if scheduler else {}
    windows = real_windows(path, model, len(forecast))
    raw_seconds = raw_time(model, windows)
    # The model alone with every core (onnxruntime's default threads): the machine's best.
    best_seconds = raw_time(Forecaster.load(model_path), windows)
    return {"rows": rows, "assets": len(forecast), "seconds": seconds,
            "raw_seconds": raw_seconds, "best_raw_seconds": best_seconds,
            "rss_before_kib": rss_before, "rss_after_kib": rss_after, **dask}


def measure_dask(path: Path, model_path: Path, scheduler: str, expected: pd.DataFrame) -> dict:
    """rul.distributed over the same file: seconds, and whether it gave the same table."""
    from rul.distributed import forecast_distributed

    started = time.perf_counter()
    table = forecast_distributed(model_path, path, scheduler=scheduler)
    seconds = time.perf_counter() - started
    same = table.equals(expected.reset_index(drop=True))
    return {"dask_seconds": seconds, "dask_same": bool(same)}


def raw_time(model: Forecaster, windows: np.ndarray) -> float:
    """Seconds for predict_windows over `windows` (the forecast's batches), after a warm-up."""
    model.predict_windows(windows[: model.batch_size])
    started = time.perf_counter()
    model.predict_windows(windows)
    return time.perf_counter() - started


def real_windows(path: Path, model: Forecaster, n: int) -> np.ndarray:
    """`n` windows cut from the first rows of the file, in the model's feature order."""
    if path.suffix == ".csv":
        sample = pd.read_csv(path, nrows=100_000, usecols=model.features)
    else:
        import pyarrow.parquet as pq

        batch = next(pq.ParquetFile(path).iter_batches(batch_size=100_000,
                                                       columns=model.features))
        sample = batch.to_pandas()
    values = sample[model.features].to_numpy(dtype=np.float32)
    starts = (np.arange(n) * 7919) % (len(values) - model.window)
    return values[starts[:, None] + np.arange(model.window)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--assets", type=int, default=100_000)
    parser.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    parser.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS)
    parser.add_argument("--threads", type=int, help="onnxruntime intra-op threads")
    parser.add_argument("--model", type=Path, default=default_model_path())
    parser.add_argument("--dir", type=Path, help="keep the fleet file here (reused if there)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scheduler", help="also run rul.distributed: 'local' or an address")
    # The children's parts: a process's peak RSS carries over into the processes it starts, so
    # the parent stays small and the simulation and the measurement each get their own.
    parser.add_argument("--write", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write:
        started = time.perf_counter()
        rows = write_fleet(args.write, args.assets, args.seed)
        size = args.write.stat().st_size / 2**20
        print(f"simulated {args.assets:,} assets, {rows:,} rows -> {args.write} ({size:.0f} MiB) "
              f"in {time.perf_counter() - started:.0f} s")
        return
    if args.measure:
        print(json.dumps(measure(args.measure, args.model, args.chunk_rows, args.threads,
                                 args.scheduler)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.dir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"fleet-{args.assets}-{args.seed}.{args.format}"
        if not path.is_file():
            subprocess.run([sys.executable, __file__, "--write", str(path), "--assets",
                            str(args.assets), "--seed", str(args.seed)], check=True)
        child = [sys.executable, __file__, "--measure", str(path), "--model", str(args.model),
                 "--chunk-rows", str(args.chunk_rows)]
        child += ["--threads", str(args.threads)] if args.threads else []
        child += ["--scheduler", args.scheduler] if args.scheduler else []
        done = subprocess.run(child, check=True, stdout=subprocess.PIPE, text=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
    report(result, args)


def report(result: dict, args: argparse.Namespace) -> None:
    assets, seconds = result["assets"], result["seconds"]
    end_to_end = assets / seconds
    raw = assets / result["raw_seconds"]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"model {args.model.name}, {args.format}, chunk_rows {args.chunk_rows:,}, threads "
          f"{args.threads or default_threads()}, load average {load}")
    print(f"  rows                     {result['rows']:>14,}")
    print(f"  assets (= windows)       {assets:>14,}")
    print(f"  forecast_file            {seconds:>14.2f} s")
    print(f"  assets/s, windows/s      {end_to_end:>14,.0f}")
    print(f"  rows/s                   {result['rows'] / seconds:>14,.0f}")
    print(f"  peak RSS before/after    {result['rss_before_kib'] / 1024:>8.0f} / "
          f"{result['rss_after_kib'] / 1024:.0f} MiB")
    best = assets / result["best_raw_seconds"]
    print(f"  raw predict_windows      {raw:>14,.0f} windows/s ({result['raw_seconds']:.2f} s), "
          "same session")
    print(f"  end-to-end / raw         {end_to_end / raw:>14.3f}")
    print(f"  raw, every core          {best:>14,.0f} windows/s ({result['best_raw_seconds']:.2f} "
          "s), onnxruntime's default threads")
    print(f"  end-to-end / that        {end_to_end / best:>14.3f}")
    if "dask_seconds" in result:
        dask = assets / result["dask_seconds"]
        print(f"  Dask, {args.scheduler:<18} {result['dask_seconds']:>8.2f} s, {dask:,.0f} assets/s"
              f", {dask / end_to_end:.2f}x one process; same table: {result['dask_same']}")


if __name__ == "__main__":
    main()
