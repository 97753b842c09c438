"""Configuration of the data stage: one dataclass, a docstring per field, checked on creation."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from rul.errors import ConfigError

NORMALISATIONS = ("auto", "global", "condition")


@dataclass(frozen=True)
class DataConfig:
    """How a fleet becomes model inputs and targets."""

    window: int = 30
    """Cycles per input window."""
    stride: int = 1
    """Cycles between the ends of consecutive training windows."""
    padded_windows: bool = False
    """Also train on the windows that end in each asset's first `window` - 1 cycles, padded by
    repeating the first reading as serving pads a short history: without them, a long window
    leaves the network blind to young assets (test engines from 19 cycles on in FD004)."""
    rul_cap: int = 125
    """Targets are min(RUL, rul_cap): the piecewise-linear target of the literature."""
    horizon: int = 30
    """Failure label: true RUL <= horizon cycles."""
    normalisation: str = "auto"
    """'global' z-score, 'condition' (per operating condition), or 'auto' (condition when the
    settings show several regimes)."""
    conditions: int | None = None
    """Number of operating conditions for 'condition' normalisation; None discovers it."""
    max_conditions: int = 10
    """Largest number of operating conditions the discovery considers."""
    cycle_feature: bool = False
    """Feed each reading's `cycle` to the network beside the sensors, as the asset's age. Only
    for fleets whose cycles count from each asset's start of service, as C-MAPSS's do (every
    engine's record starts at cycle 1, the test engines' too): the network learns how long
    assets live, so an asset's cycle numbers must mean the same when it is served."""
    near_constant_fraction: float = 0.95
    """A sensor is dropped when one value covers at least this fraction of the training rows
    within its operating condition (constant and near-constant sensors carry no health)."""
    validation_fraction: float = 0.2
    """Fraction of training assets held out (whole assets, never windows) for validation
    (with folds = 1)."""
    folds: int = 1
    """1: one network, validated on `validation_fraction` of the assets. K >= 2: a
    cross-fitted ensemble: the assets are dealt into K folds, one network is trained per fold
    and early-stopped on the fold it never saw, and the K networks are averaged into one model;
    calibration and validation metrics use each asset's out-of-fold prediction, so every asset
    is a validation asset once. Training costs K runs, inference K networks."""
    validation_from: float = 0.0
    """Validation windows (early stopping, the best checkpoint, calibration) end at or after
    this fraction of each held-out asset's life; 0: at every cycle. The labelled C-MAPSS test
    engines show 21-98 % of their lives, 33-92 % from the 10th to the 90th percentile
    (docs/ACCURACY.md)."""
    extra_training: tuple[str, ...] = ()
    """Further run-to-failure fleets whose assets join every network's training set and are
    never validated on: early stopping, calibration and the validation metrics see only the
    fleet being trained. They add training windows, not inputs: the sensors and their
    normalisation are fitted on the fleet's own assets. C-MAPSS subset names (their train
    files, read from `rul train --data` when it is a directory, else from $RUL_CMAPSS_DIR) or
    fleet files (CSV, Parquet, C-MAPSS text) with the fleet's settings and sensors; assets
    identical to the fleet's are refused. For fleets of the same kind of asset, operating
    conditions and failure modes: FD001's and FD003's engines share one condition and the HPC
    fault (docs/ACCURACY.md, "Training on the sibling subset's engines")."""
    seed: int = 0
    """Seed of the asset split and the condition discovery."""

    def __post_init__(self) -> None:
        for name in ("window", "stride", "rul_cap", "horizon", "max_conditions", "folds", "seed"):
            value = getattr(self, name)
            _check(is_int(value), name, value, "must be an integer")
        _check(isinstance(self.padded_windows, bool), "padded_windows", self.padded_windows,
               "must be true or false")
        _check(isinstance(self.cycle_feature, bool), "cycle_feature", self.cycle_feature,
               "must be true or false")
        _check(is_number(self.near_constant_fraction), "near_constant_fraction",
               self.near_constant_fraction, "must be a number")
        _check(is_number(self.validation_fraction), "validation_fraction",
               self.validation_fraction, "must be a number")
        _check(is_number(self.validation_from) and 0 <= self.validation_from < 1,
               "validation_from", self.validation_from, "must be a number in [0, 1)")
        _check(self.window >= 1, "window", self.window, "must be >= 1")
        _check(self.stride >= 1, "stride", self.stride, "must be >= 1")
        _check(self.rul_cap >= 1, "rul_cap", self.rul_cap, "must be >= 1")
        _check(self.horizon >= 1, "horizon", self.horizon, "must be >= 1")
        _check(self.normalisation in NORMALISATIONS, "normalisation", self.normalisation,
               f"must be one of {list(NORMALISATIONS)}")
        _check(self.conditions is None or (is_int(self.conditions)
                                           and self.conditions >= 1),
               "conditions", self.conditions, "must be an integer >= 1 or null")
        _check(self.max_conditions >= 1, "max_conditions", self.max_conditions, "must be >= 1")
        _check(self.seed >= 0, "seed", self.seed, "must be >= 0")
        extra = self.extra_training
        _check(isinstance(extra, list | tuple)
               and all(isinstance(name, str) and name.strip() for name in extra),
               "extra_training", extra, "must be a list of C-MAPSS subset names or fleet files")
        _check(len(set(extra)) == len(extra), "extra_training", extra, "names a fleet twice")
        object.__setattr__(self, "extra_training", tuple(extra))
        _check(self.folds >= 1, "folds", self.folds, "must be >= 1")
        _check(0.5 < self.near_constant_fraction <= 1.0, "near_constant_fraction",
               self.near_constant_fraction, "must be in (0.5, 1]")
        _check(0.0 <= self.validation_fraction < 1.0, "validation_fraction",
               self.validation_fraction, "must be in [0, 1)")

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["extra_training"] = list(self.extra_training)  # YAML and JSON take lists
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DataConfig:
        return from_dict(cls, values, "data")


def from_dict(cls: type, values: dict[str, Any], section: str) -> Any:
    """Build a config dataclass from a mapping; unknown keys are an error naming them."""
    if not isinstance(values, dict):
        raise ConfigError(f"{section}: expected a mapping, got {type(values).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{section}: unknown keys {unknown}; known: {sorted(known)}")
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"{section}: {exc}") from None


def is_int(value: Any) -> bool:
    """An integer config value (YAML's true/false are bools, which Python counts as ints)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite number (not a bool, not NaN or inf)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check(ok: bool, name: str, value: Any, rule: str) -> None:
    if not ok:
        raise ConfigError(f"{name} {rule}, got {value!r}")
