"""Nested validation: the shipped ensemble as a whole, on engines it never saw (slow).

    .venv/bin/python bench/nested_validation.py [--subset FD001] [--configs A.yaml B.yaml]
                                                [--seeds 0 1 2] [--outer-folds 5]
                                                [--out runs/nested]

A run's own validation (metrics.json) predicts each training engine with the one network of
its cross-fitted ensemble that never trained on it, while the shipped model answers with the
mean of all of them, so configurations whose single networks are noisy but whose ensembles are
good look worse there than they are. Here the training engines are dealt into outer folds; for
each, the whole `rul train` procedure (its own folds, early stopping, calibration) trains an
ensemble on the other engines, and that ensemble predicts the held-out engines, each cut at ten
random cycles as test engines are cut (`training.run.validation_metrics`). Each configuration
(a `rul train --config` file; none: the subset's defaults) runs with the same seeds, so the
same outer folds and cuts: the columns compare. It costs `--outer-folds` runs per seed.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from rul.loaders import default_cmapss_dir, load_cmapss
from rul.split import fold_assets
from training.checkpoint import load_checkpoint
from training.config import merge, resolve_config
from training.run import train_run, validation_metrics

KEYS = ("rmse", "score", "f1", "coverage")


def nested_metrics(subset: str, config_file: Path | None, seed: int, outer_folds: int,
                   out: Path) -> dict[str, Any]:
    """validation_metrics of the outer folds' ensembles, each on its held-out engines."""
    data = load_cmapss(default_cmapss_dir(), subset)
    config = merge(resolve_config(subset, config_file=config_file),
                   {"data": {"seed": seed}, "train": {"seed": seed}})
    parts = []
    for k, (train, held_out) in enumerate(fold_assets(data.train, outer_folds, seed)):
        run = out / f"outer-{k}"
        shutil.rmtree(run, ignore_errors=True)  # this script's own run of an earlier time
        train_run(train, config, run, name=subset.lower(), progress=False)
        parts.append((load_checkpoint(run), held_out))
    return validation_metrics(parts, seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subset", default="FD001")
    parser.add_argument("--configs", nargs="+", type=Path, default=[None],
                        help="rul train --config files to compare (default: the defaults)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--outer-folds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("runs/nested"))
    args = parser.parse_args()
    print(f"nested validation on {args.subset}'s training engines, {args.outer_folds} outer "
          "folds, ten cuts per engine")
    print("| configuration | seed | RMSE | PHM08 score | F1 | coverage | minutes |")
    print("|---|---|---|---|---|---|---|")
    for config_file in args.configs:
        name = config_file.stem if config_file else "defaults"
        rows = []
        for seed in args.seeds:
            started = time.perf_counter()
            result = nested_metrics(args.subset, config_file, seed, args.outer_folds,
                                    args.out / f"{args.subset}-{name}-{seed}")
            rows.append(result)
            print(f"| {name} | {seed} | " + " | ".join(f"{result[k]:.2f}" for k in KEYS)
                  + f" | {(time.perf_counter() - started) / 60:.1f} |", flush=True)
        print(f"| {name} | mean +- std | " + " | ".join(
            f"{np.mean([r[k] for r in rows]):.2f} +- {np.std([r[k] for r in rows]):.2f}"
            for k in KEYS) + " | |", flush=True)


if __name__ == "__main__":
    main()
