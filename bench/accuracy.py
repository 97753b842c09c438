"""Accuracy of the default configuration: every backbone x subset x seed (prints mean +- std).

    .venv/bin/python bench/accuracy.py [--subsets FD001 FD003] [--backbones cnn lstm]
                                       [--seeds 0 1 2] [--out runs/bench]

Subsets with test labels (FD001, FD003) are scored on the test set with the standard protocol
(last window per engine, true RUL capped at 125). FD002 and FD004 ship without test labels
here: they are scored on the run's own validation (metrics.json): with the cross-fitted
default, every training engine predicted by the network that never trained on it, each engine
cut at ten random cycles as test engines are cut. With the labels, run:
rul evaluate --model RUN --subset FD002 --labels RUL_FD002.txt
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

from rul.evaluation import evaluate
from rul.loaders import default_cmapss_dir, load_cmapss
from training.checkpoint import load_checkpoint
from training.config import default_config, merge
from training.run import train_run

KEYS = ("rmse", "score", "f1", "coverage")


def run_one(subset: str, backbone: str, seed: int, out: Path) -> dict[str, float]:
    data = load_cmapss(default_cmapss_dir(), subset)
    config = merge(default_config(subset, backbone), {"data": {"seed": seed},
                                                       "train": {"seed": seed}})
    started = time.perf_counter()
    run = out / f"{subset}-{backbone}-{seed}"
    shutil.rmtree(run, ignore_errors=True)  # this script's own run of an earlier time
    run = train_run(data.train, config, run, name=subset.lower(),
                    progress=False)
    seconds = time.perf_counter() - started
    if data.test_rul is not None:
        result = evaluate(load_checkpoint(run), data.test, data.test_rul, trajectories=False)
        source = "test"
    else:
        result = json.loads((run / "metrics.json").read_text())["validation"]
        source = "validation"
    return {**{k: float(result[k]) for k in KEYS}, "seconds": seconds, "source": source}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subsets", nargs="+", default=["FD001", "FD002", "FD003", "FD004"])
    parser.add_argument("--backbones", nargs="+", default=["cnn", "lstm"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    args = parser.parse_args()
    print("| subset | backbone | scored on | RMSE | PHM08 score | F1 | coverage | train s |")
    print("|---|---|---|---|---|---|---|---|")
    for subset in args.subsets:
        for backbone in args.backbones:
            rows = [run_one(subset, backbone, s, args.out) for s in args.seeds]
            cells = [_mean_std([r[k] for r in rows]) for k in (*KEYS, "seconds")]
            print(f"| {subset} | {backbone} | {rows[0]['source']} ({len(rows)} seeds) | "
                  + " | ".join(cells) + " |", flush=True)


def _mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.2f} +- {np.std(values):.2f}"


if __name__ == "__main__":
    main()
