"""Cutting validation engines as the test sets were cut: a closer estimate of a test score?
(inference only, about a minute per subset at ten cuts)

    .venv/bin/python bench/validation_cuts.py --subset FD004 runs/bench-s2/FD004-cnn-{0,1,2}
    .venv/bin/python bench/validation_cuts.py --subset FD004 --cuts 50 runs/nested-fd004/*

The validation of `rul train` cuts each engine at a share of its life drawn uniformly from
[0.1, 0.9]. The labelled C-MAPSS test sets show more of each life: the share (cycles seen /
(cycles seen + true RUL)) is a property of how NASA cut them. This script cuts the training
engines both ways (shared draws, ten per engine unless --cuts) and scores answers from models
that never trained on the engine: a cross-fitted run's out-of-fold network, or, for a seed
folder of bench/nested_validation.py, the outer fold's whole ensemble.

- `uniform`: the shares `rul train` draws;
- `test-like`: shares drawn from the labelled test sets of the *other* subsets in the data
  directory (never the subset's own labels, so on FD001 and FD003 the estimate can be checked
  against their test score honestly).

It also checks the premise on the subset's own test file, labels or not: the cycles its test
engines show should look like the training engines cut at the test-like shares (quantiles of
the cycles seen, and the Kolmogorov-Smirnov distance of the two samples).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from rul.errors import RulError
from rul.evaluation import last_window_predictions
from rul.fleet import Fleet
from rul.loaders import default_cmapss_dir, load_cmapss
from rul.split import fold_assets, life_fractions, truncate_assets
from training.checkpoint import load_checkpoint
from training.config import RunConfig
from training.run import (
    HELD_OUT_CUT_SEED,
    VALIDATION_CUTS,
    held_out_answers,
    out_of_fold_predictions,
)

SUBSETS = ("FD001", "FD002", "FD003", "FD004")


def reference_fractions(directory: Path, subset: str) -> tuple[np.ndarray, list[str]]:
    """Life shares seen by the test engines of every other labelled subset."""
    shares, names = [], []
    for other in SUBSETS:
        if other == subset:
            continue
        data = load_cmapss(directory, other)
        if data.test_rul is not None:
            shares.append(life_fractions(data.test, data.test_rul))
            names.append(other)
    if not shares:
        raise SystemExit(f"{directory}: no other labelled subset to take test-like cuts from")
    return np.concatenate(shares), names


def outer_runs(run: Path) -> list[Path]:
    """The outer folds' runs of a bench/nested_validation.py seed folder; [] for a run."""
    return sorted(run.glob("outer-*"), key=lambda p: int(p.name.split("-")[1]))


def held_out(run: Path, train: Fleet, cuts: list[Fleet]) -> np.ndarray:
    """[cuts, engines] answers, each engine's from a model that never trained on it: the
    run's out-of-fold network, or for a seed folder of bench/nested_validation.py (outer-K
    runs) the outer fold's whole ensemble."""
    outer = outer_runs(run)
    if not outer:
        return out_of_fold_predictions(run, train, cuts)
    seed = RunConfig.load(outer[0] / "config.yaml").data.seed
    folds = fold_assets(train, len(outer), seed)
    parts = [(load_checkpoint(model_dir), held_out_engines)
             for model_dir, (_, held_out_engines) in zip(outer, folds, strict=True)]
    return held_out_answers(parts, train, cuts)


def ks_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Largest gap between the two samples' empirical distribution functions."""
    grid = np.union1d(a, b)
    cdf = [np.searchsorted(np.sort(x), grid, side="right") / len(x) for x in (a, b)]
    return float(np.abs(cdf[0] - cdf[1]).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="cross-fitted run directories, or "
                        "seed folders of bench/nested_validation.py (FD00N-NAME-SEED)")
    parser.add_argument("--subset", default="FD001")
    parser.add_argument("--cuts", type=int, default=VALIDATION_CUTS,
                        help="draws of cut points per engine (more: less noise from the draw)")
    args = parser.parse_args()
    directory = default_cmapss_dir()
    data = load_cmapss(directory, args.subset)
    shares, names = reference_fractions(directory, args.subset)
    first = (outer_runs(args.runs[0]) or [args.runs[0]])[0]
    cap = RunConfig.load(first / "config.yaml").data.rul_cap
    cuts = {
        "uniform": [truncate_assets(data.train, HELD_OUT_CUT_SEED + c) for c in range(args.cuts)],
        "test-like": [truncate_assets(data.train, HELD_OUT_CUT_SEED + c, fractions=shares)
                      for c in range(args.cuts)],
    }
    print(f"{args.subset}: {data.train.n_assets} training engines x {args.cuts} cuts; "
          f"test-like shares from {' + '.join(names)} ({len(shares)} test engines: share of "
          f"life seen q10/q50/q90 {np.quantile(shares, [0.1, 0.5, 0.9]).round(2).tolist()})")

    seen = data.test.lengths() if data.test is not None else None
    print("\n| cycles seen | q10 | q50 | q90 | mean | KS distance to the test engines | "
          "true RUL at the cap |")
    print("|---|---|---|---|---|---|---|")
    rows = {} if seen is None else {"test engines": (seen, data.test_rul)}
    for kind, drawn in cuts.items():
        rows[f"{kind} cuts"] = (np.concatenate([cut.lengths() for cut, _ in drawn]),
                                np.concatenate([rul for _, rul in drawn]))
    for name, (cycles, rul) in rows.items():
        ks = "" if seen is None or name == "test engines" else f"{ks_distance(cycles, seen):.3f}"
        at_cap = "" if rul is None else f"{np.mean(rul >= cap):.0%}"
        q = np.quantile(cycles, [0.1, 0.5, 0.9])
        print(f"| {name} | {q[0]:.0f} | {q[1]:.0f} | {q[2]:.0f} | {cycles.mean():.0f} | {ks} | "
              f"{at_cap} |")

    print(f"\n| run | held-out RMSE, uniform cuts | held-out RMSE, test-like cuts | "
          f"test RMSE (capped {cap:g}) |")
    print("|---|---|---|---|")
    scores: dict[str, list[float]] = {"uniform": [], "test-like": [], "test": []}
    for run in args.runs:
        for kind, drawn in cuts.items():
            answers = held_out(run, data.train, [cut for cut, _ in drawn])
            truth = np.minimum(np.stack([rul for _, rul in drawn]), cap)
            scores[kind].append(float(np.sqrt(np.mean((answers - truth) ** 2))))
        tested = "(no labels)" if data.test_rul is None else "(nested)"
        if data.test_rul is not None and (run / "model.ckpt").is_file():
            rul = last_window_predictions(load_checkpoint(run), data.test).rul
            scores["test"].append(float(np.sqrt(np.mean((rul - np.minimum(data.test_rul, cap))
                                                        ** 2))))
            tested = f"{scores['test'][-1]:.2f}"
        print(f"| {run} | {scores['uniform'][-1]:.2f} | {scores['test-like'][-1]:.2f} | "
              f"{tested} |", flush=True)
    mean = {k: (f"{np.mean(v):.2f} +- {np.std(v):.2f}" if v else "")
            for k, v in scores.items()}
    print(f"| mean of {len(args.runs)} | {mean['uniform']} | {mean['test-like']} | "
          f"{mean['test']} |")


if __name__ == "__main__":
    try:
        main()
    except RulError as exc:
        raise SystemExit(f"error: {exc}") from None
