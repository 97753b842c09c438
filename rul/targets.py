"""Training and evaluation targets: remaining useful life per row and the failure label."""

from __future__ import annotations

import numpy as np

from rul.errors import DataError
from rul.fleet import Fleet
from rul.schema import ASSET_ID, CYCLE


def rul_per_row(fleet: Fleet, rul_at_end: np.ndarray | None = None) -> np.ndarray:
    """True RUL at every row: cycles to the asset's last row plus its RUL after that row.

    rul_at_end: per asset, in asset order (a test set's labels); None for run-to-failure data,
    whose last row is the failure (RUL 0).
    """
    frame = fleet.frame
    last = frame.groupby(ASSET_ID, sort=False)[CYCLE].transform("max").to_numpy()
    rul = last - frame[CYCLE].to_numpy()
    if rul_at_end is not None:
        rul_at_end = np.asarray(rul_at_end)
        if len(rul_at_end) != fleet.n_assets:
            raise ValueError(f"{len(rul_at_end)} labels for {fleet.n_assets} assets")
        rul = rul + np.repeat(rul_at_end, fleet.lengths())
    return rul.astype(np.float64)


def check_run_to_failure(fleet: Fleet) -> None:
    """Training data are run-to-failure records, each asset's last row its failure. An asset of
    one row would teach that a first reading is a failure: far more often a data error (a
    truncated export, a mistyped asset id) than an asset that failed in its first cycle."""
    lengths = fleet.lengths()
    single = fleet.asset_ids[lengths < 2]
    if len(single):
        more = f" ({len(single) - 1} more assets too)" if len(single) > 1 else ""
        raise DataError(f"only one row{more}; training data are run-to-failure "
                        "records whose last row is the failure, so an asset needs its history "
                        "up to the failure: remove it or give its earlier rows",
                        file=fleet.source, asset=single[0])


def capped(rul: np.ndarray, rul_cap: float) -> np.ndarray:
    """The piecewise-linear target: min(RUL, rul_cap)."""
    return np.minimum(rul, rul_cap)


def failure_label(rul: np.ndarray, horizon: float) -> np.ndarray:
    """True where the asset fails within `horizon` cycles (RUL <= horizon)."""
    return np.asarray(rul) <= horizon
