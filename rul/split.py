"""Asset-wise splits and truncation: validation never shares an asset with training."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rul.errors import DataError
from rul.fleet import Fleet
from rul.schema import ASSET_ID, CYCLE


def split_assets(fleet: Fleet, validation_fraction: float, seed: int) -> tuple[Fleet, Fleet]:
    """(train, validation) fleets holding disjoint, seeded random sets of whole assets."""
    ids = fleet.asset_ids
    n_val = int(round(validation_fraction * len(ids)))
    if validation_fraction > 0 and n_val == 0:
        n_val = 1
    if n_val >= len(ids):
        raise ValueError(f"{fleet.source}: {len(ids)} assets are too few to hold out "
                         f"{validation_fraction:.0%} for validation")
    chosen = np.random.default_rng(seed).choice(len(ids), n_val, replace=False)
    is_val = np.zeros(len(ids), dtype=bool)
    is_val[chosen] = True
    return select_assets(fleet, ids[~is_val]), select_assets(fleet, ids[is_val])


def fold_assets(fleet: Fleet, folds: int, seed: int) -> list[tuple[Fleet, Fleet]]:
    """(train, validation) fleets for each of `folds` folds: the assets dealt at random into
    folds of (nearly) equal size; fold k validates on its own assets and trains on the rest, so
    every asset is validated on exactly once."""
    ids = fleet.asset_ids
    if folds < 2 or folds > len(ids):
        raise ValueError(f"{fleet.source}: {len(ids)} assets cannot be dealt into {folds} folds "
                         f"(2 to {len(ids)})")
    fold = np.random.default_rng(seed).permutation(len(ids)) % folds
    return [(select_assets(fleet, ids[fold != k]), select_assets(fleet, ids[fold == k]))
            for k in range(folds)]


def select_assets(fleet: Fleet, asset_ids: np.ndarray) -> Fleet:
    """The fleet restricted to `asset_ids` (order of the original fleet kept)."""
    mask = fleet.frame[ASSET_ID].isin(asset_ids).to_numpy()
    return Fleet(fleet.frame[mask].reset_index(drop=True), fleet.settings, fleet.sensors,
                 fleet.source)


def truncate_assets(fleet: Fleet, seed: int, min_cycles: int = 1, max_fraction: float = 0.9,
                    fractions: np.ndarray | None = None) -> tuple[Fleet, np.ndarray]:
    """Cut each run-to-failure asset at a random cycle, as C-MAPSS test sets are cut.

    The share of its life an asset keeps is uniform on [0.1, max_fraction], or drawn from
    `fractions` (e.g. `life_fractions` of a labelled test set, to cut as that test set was).
    Returns the truncated fleet and each asset's true RUL after its new last cycle, so a
    validation set can be scored the way the test set is (last window against a label).
    """
    rng = np.random.default_rng(seed)
    lengths = fleet.lengths()
    drawn = (rng.uniform(0.1, max_fraction, len(lengths)) if fractions is None
             else rng.choice(np.asarray(fractions, dtype=float), len(lengths)))
    keep = np.maximum(min_cycles, np.ceil(drawn * lengths)).astype(np.int64)
    keep = np.minimum(keep, lengths)
    position = np.arange(len(fleet.frame)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    mask = position < np.repeat(keep, lengths)
    truncated = Fleet(fleet.frame[mask].reset_index(drop=True), fleet.settings, fleet.sensors,
                      fleet.source)
    return truncated, (lengths - keep).astype(np.int64)


def life_fractions(test: Fleet, test_rul: np.ndarray) -> np.ndarray:
    """The share of its life each asset of a labelled test set shows: cycles seen / (cycles
    seen + true RUL after them)."""
    seen = test.lengths()
    return seen / (seen + np.asarray(test_rul, dtype=float))


def join_fleets(fleets: list[Fleet]) -> Fleet:
    """Several fleets' assets as one training fleet (their order kept): asset_id, cycle and
    the first fleet's settings and sensors, in its column order. Asset ids become 0..n-1, as
    two fleets may use the same ids. DataError names a fleet whose settings or sensors differ."""
    first = fleets[0]
    columns = [ASSET_ID, CYCLE, *first.settings, *first.sensors]
    frames = []
    for fleet in fleets:
        if (set(fleet.settings), set(fleet.sensors)) != (set(first.settings),
                                                         set(first.sensors)):
            raise DataError(f"its columns differ from {first.source}'s: settings "
                            f"{list(fleet.settings)} and sensors {list(fleet.sensors)} against "
                            f"{list(first.settings)} and {list(first.sensors)}; fleets trained "
                            "together need the same settings and sensors", file=fleet.source)
        frames.append(fleet.frame[columns])
    frame = pd.concat(frames, ignore_index=True)
    # Dense ids in frame order: each fleet is sorted by asset, so the joined frame is too.
    starts = np.cumsum([0] + [f.n_assets for f in fleets[:-1]])
    codes = [pd.factorize(f.frame[ASSET_ID])[0] + start for f, start in zip(fleets, starts,
                                                                            strict=True)]
    frame[ASSET_ID] = np.concatenate(codes).astype(np.int64)
    return Fleet(frame, first.settings, first.sensors,
                 " + ".join(fleet.source for fleet in fleets))


def shared_assets(fleet: Fleet, other: Fleet) -> list[tuple[object, object]]:
    """(asset of `fleet`, asset of `other`) pairs whose readings are identical: cycles,
    settings and sensors row for row, whatever their ids."""
    def signatures(f: Fleet) -> dict[bytes, object]:
        columns = [CYCLE, *sorted(f.settings), *sorted(f.sensors)]
        rows = pd.util.hash_pandas_object(f.frame[columns], index=False).to_numpy()
        ends = np.cumsum(f.lengths())
        return {rows[end - n:end].tobytes(): asset
                for asset, n, end in zip(f.asset_ids, f.lengths(), ends, strict=True)}

    mine = signatures(fleet)
    return [(mine[key], asset) for key, asset in signatures(other).items() if key in mine]
