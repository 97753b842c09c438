"""Ensembles of seeds: would averaging several runs' networks help? (inference only, ~1 min)

    .venv/bin/python bench/seed_ensembles.py --subset FD004 runs/bench-s2/FD004-cnn-{0,1,2}

Each run is a cross-fitted `rul train` run (data.folds > 1) of one configuration with its own
seed, so its own assignment of engines to folds. Every training engine is cut at the same ten
random cycles for all runs (as test engines are cut), and each run answers for it with the one
network that never trained on it. Averaging those answers over k runs validates an average of k
networks, none of which saw the engine: the gain from more networks, seen on engines without
test labels. Printed: the RMSE of each run, of every pair and of all runs averaged; with test
labels, also the test RMSE of the runs' whole ensembles, averaged alike.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np

from rul.errors import RulError
from rul.evaluation import last_window_predictions
from rul.loaders import default_cmapss_dir, load_cmapss
from rul.split import truncate_assets
from training.checkpoint import load_checkpoint
from training.config import RunConfig
from training.run import HELD_OUT_CUT_SEED, VALIDATION_CUTS, out_of_fold_predictions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories, one per seed")
    parser.add_argument("--subset", default="FD001")
    args = parser.parse_args()
    data = load_cmapss(default_cmapss_dir(), args.subset)
    cuts = [truncate_assets(data.train, HELD_OUT_CUT_SEED + c) for c in range(VALIDATION_CUTS)]
    config = RunConfig.load(args.runs[0] / "config.yaml")
    cap = config.data.rul_cap
    truth = np.minimum(np.stack([rul for _, rul in cuts]), cap)
    test_truth = None if data.test_rul is None else np.minimum(data.test_rul, cap)
    oof, test = [], []
    for run in args.runs:
        oof.append(out_of_fold_predictions(run, data.train, [cut for cut, _ in cuts]))
        if test_truth is not None:
            test.append(last_window_predictions(load_checkpoint(run), data.test).rul)

    def rmse(answers: list[np.ndarray], truth: np.ndarray) -> float:
        return float(np.sqrt(np.mean((np.mean(answers, axis=0) - truth) ** 2)))

    print(f"{args.subset}: {len(args.runs)} runs, every training engine cut at "
          f"{VALIDATION_CUTS} shared cycles, true RUL capped at {cap}")
    print("| runs averaged | out-of-fold RMSE | test RMSE of the whole ensembles |")
    print("|---|---|---|")
    for size in range(1, len(args.runs) + 1):
        for chosen in itertools.combinations(range(len(args.runs)), size):
            names = " + ".join(args.runs[i].name for i in chosen)
            score = rmse([oof[i] for i in chosen], truth)
            tested = (f"{rmse([test[i] for i in chosen], test_truth):.2f}" if test else
                      "(no labels)")
            print(f"| {names} | {score:.2f} | {tested} |", flush=True)


if __name__ == "__main__":
    try:
        main()
    except RulError as exc:
        raise SystemExit(f"error: {exc}") from None
