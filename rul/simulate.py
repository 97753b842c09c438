"""Seeded fleet simulator: C-MAPSS-like run-to-failure trajectories in the one data shape.

Each asset has a health index that stays flat until an onset and then falls exponentially to a
failure threshold (Saxena et al., PHM08 2008); 21 sensors respond to the damage, to the
operating condition of each cycle and to noise. docs/SIMULATOR.md gives the equations, the
calibration and the limits.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from rul.errors import ConfigError, DataError
from rul.io import make_folder
from rul.schema import ASSET_ID, CMAPSS_COLUMNS, CYCLE, SENSORS, SETTINGS

# Per sensor: sea-level level (C-MAPSS units), relative noise std, relative shift at failure
# (damage = 1) under the HPC and the fan fault, and slopes of log(level) against altitude / 42 kft,
# Mach / 0.84 and (100 - throttle) / 40. Our rounded fits to the public data: levels, noise and
# HPC shifts from FD001, fan shifts from FD003, regime slopes from FD002 (docs/SIMULATOR.md).
_SENSOR_TABLE: dict[str, tuple[float, float, float, float, float, float, float]] = {
    #            level    noise     hpc      fan      alt    mach   thr
    "sensor_1": (518.67, 0.0, 0.0, 0.0, -0.21, 0.06, -0.02),  # T2 fan inlet temperature
    "sensor_2": (642.4, 4.7e-4, 0.0020, 0.0020, -0.21, 0.06, -0.08),  # T24 LPC outlet temp.
    "sensor_3": (1587.0, 2.5e-3, 0.0097, 0.0128, -0.19, 0.03, -0.13),  # T30 HPC outlet temp.
    "sensor_4": (1403.0, 2.8e-3, 0.0186, 0.0206, -0.20, -0.03, -0.15),  # T50 LPT outlet temp.
    "sensor_5": (14.62, 0.0, 0.0, 0.0, -1.83, 0.54, -0.02),  # P2 fan inlet pressure
    "sensor_6": (21.61, 6.0e-5, 0.0, 0.0, -1.82, 0.53, -0.15),  # P15 bypass pressure
    "sensor_7": (554.0, 7.3e-4, -0.0044, 0.0257, -1.82, 0.47, -0.39),  # P30 HPC outlet pressure
    "sensor_8": (2388.06, 1.3e-5, 7.0e-5, 2.4e-4, -0.11, 0.03, -0.17),  # Nf fan speed
    "sensor_9": (9056.0, 4.6e-4, 0.0046, 0.0079, -0.10, 0.01, -0.07),  # Nc core speed
    "sensor_10": (1.30, 0.0, 0.0, 0.0, -0.04, -0.22, -0.16),  # epr engine pressure ratio
    "sensor_11": (47.36, 2.1e-3, 0.0166, 0.0211, -0.10, -0.03, -0.17),  # Ps30 static pressure
    "sensor_12": (521.9, 5.8e-4, -0.0040, 0.0262, -1.82, 0.47, -0.39),  # phi fuel flow / Ps30
    "sensor_13": (2388.06, 1.25e-5, 7.0e-5, 2.4e-4, 0.0, 0.0, -0.16),  # NRf corrected fan speed
    "sensor_14": (8137.0, 3.8e-4, 0.0, 0.0, 0.01, -0.02, -0.03),  # NRc corrected core speed
    "sensor_15": (8.418, 2.4e-3, 0.0121, -0.0182, -0.01, 0.11, 0.18),  # BPR bypass ratio
    "sensor_16": (0.03, 0.0, 0.0, 0.0, 0.18, -0.62, -0.11),  # farB burner fuel-air ratio
    "sensor_17": (392.3, 2.35e-3, 0.0101, 0.0136, -0.20, 0.03, -0.14),  # htBleed bleed enthalpy
    "sensor_18": (2388.0, 0.0, 0.0, 0.0, -0.11, 0.03, -0.17),  # Nf_dmd demanded fan speed
    "sensor_19": (100.0, 0.0, 0.0, 0.0, 0.0, 0.0, -0.16),  # PCNfR_dmd demanded corr. fan speed
    "sensor_20": (38.93, 2.55e-3, -0.0125, 0.0148, -1.74, 0.47, -0.30),  # W31 HPT coolant bleed
    "sensor_21": (23.36, 2.6e-3, -0.0124, 0.0149, -1.74, 0.47, -0.30),  # W32 LPT coolant bleed
}
_TABLE = np.array([_SENSOR_TABLE[name] for name in SENSORS])
_LEVEL, _NOISE = _TABLE[:, 0], _TABLE[:, 1]
_SIGNATURES, _CONDITION_SLOPES = _TABLE[:, 2:4].T, _TABLE[:, 4:]

CONSTANT_SENSORS: list[str] = [f"sensor_{i}" for i in (1, 5, 10, 16, 18, 19)]
"""Exactly constant within an operating condition (as in C-MAPSS)."""
NOISE_SENSORS: list[str] = ["sensor_6", "sensor_14"]
"""Pure noise around the condition's level: no health information."""
INFORMATIVE_SENSORS: list[str] = [s for s in SENSORS if s not in CONSTANT_SENSORS + NOISE_SENSORS]
"""Sensors that respond to damage under every fault mode."""

# The six C-MAPSS FD002/FD004 regimes: altitude (kft), Mach number, throttle resolver angle.
_CMAPSS_CONDITIONS = np.array([
    [0.0, 0.0, 100.0], [10.0, 0.25, 100.0], [20.0, 0.70, 100.0],
    [25.0, 0.62, 60.0], [35.0, 0.84, 100.0], [42.0, 0.84, 100.0],
])
_SETTINGS_JITTER = np.array([0.0025, 0.0005, 0.0])  # per-cycle scatter around a regime (FD00N)
_SETTINGS_SCALE = np.array([42.0, 0.84, 40.0])  # envelope widths, to measure regime distances
# Fixed, so regimes and fault signatures describe one engine type whatever the fleet's seed.
_DESIGN_SEED = 2008
MAX_CONDITIONS = 10
"""Most operating conditions a fleet may have (the data stage discovers up to 10)."""
MAX_FAULT_MODES = 8
"""Most fault modes a fleet may have."""

_MANUFACTURING_SPREAD = 1.0  # per-asset offset std, in units of the sensor's noise std (FD001)
_GAIN_SPREAD = 0.15  # log-std of per-asset sensitivity: engines of one type differ a little
_ONSET_FRACTION = (0.15, 0.4)  # degradation onset, as a fraction of the lifetime
_SHARPNESS = (2.5, 3.5)  # rate x degradation duration: how sharply damage accelerates
_WEIBULL_SHAPES = (0.3, 60.0)  # std / mean of the excess life from 5.4 down to 0.021


@dataclass(frozen=True)
class SimulationConfig:
    """A simulated fleet: its size, seed, operating conditions, fault modes and lifetimes."""

    assets: int = 100
    """Number of training assets; the test set gets the same number of other assets."""
    seed: int = 0
    """Seed of every random draw; one seed gives one fleet, bit for bit."""
    conditions: int = 1
    """Operating conditions (regimes of the three settings); 1 is sea level, like FD001."""
    fault_modes: int = 1
    """Fault modes, each moving its own subset of sensors with its own signs (1 HPC, 2 + fan)."""
    mean_lifetime: float = 206.0
    """Mean cycles to failure (C-MAPSS FD001: 206)."""
    lifetime_std: float = 46.0
    """Standard deviation of the cycles to failure (FD001: 46)."""
    min_lifetime: int = 128
    """Shortest life in cycles; a lifetime is min_lifetime plus a Weibull draw (FD001: 128)."""
    max_initial_wear: float = 0.1
    """Initial wear (damage at cycle 1) is uniform on [0, max_initial_wear], at most 0.5."""
    noise: float = 1.0
    """Multiplier of every sensor's noise std; 0 gives noiseless sensors."""
    test_min_cycles: int = 31
    """Fewest cycles a truncated test trajectory keeps (FD001's shortest test engine has 31)."""

    def __post_init__(self) -> None:
        _check_int(self.assets, "assets", 1)
        _check_int(self.seed, "seed", 0)
        _check_int(self.conditions, "conditions", 1, MAX_CONDITIONS)
        _check_int(self.fault_modes, "fault_modes", 1, MAX_FAULT_MODES)
        _check_int(self.min_lifetime, "min_lifetime", 2)
        _check_float(self.mean_lifetime, "mean_lifetime", self.min_lifetime, "> min_lifetime")
        # The Weibull shapes searched (0.3 to 60) reach std / mean from 5.4 down to 0.021.
        excess = self.mean_lifetime - self.min_lifetime
        low, high = 0.025 * excess, 5.0 * excess
        _check_float(self.lifetime_std, "lifetime_std", low,
                     f"in [{low:g}, {high:g}] (0.025 to 5 x (mean_lifetime - min_lifetime))",
                     high, inclusive=True)
        _check_float(self.max_initial_wear, "max_initial_wear", 0.0, "in [0, 0.5]", 0.5, True)
        _check_float(self.noise, "noise", 0.0, ">= 0", inclusive=True)
        _check_int(self.test_min_cycles, "test_min_cycles", 1, self.min_lifetime - 1)


def _check_int(value: object, name: str, low: int, high: int | None = None) -> None:
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not ok or value < low or (high is not None and value > high):
        rule = f"an integer >= {low}" + (f" and <= {high}" if high is not None else "")
        raise ConfigError(f"SimulationConfig.{name} must be {rule}, got {value!r}")


def _check_float(value: object, name: str, low: float, rule: str, high: float = math.inf,
                 inclusive: bool = False) -> None:
    ok = isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and (value >= low if inclusive else value > low)
    if not ok or value > high:
        raise ConfigError(f"SimulationConfig.{name} must be {rule}, got {value!r}")


@dataclass
class SimulatedFleet:
    """A simulated training and test set in the long format of DESIGN.md."""

    train: pd.DataFrame
    """Full run-to-failure trajectories, columns schema.CMAPSS_COLUMNS; the last cycle fails."""
    test: pd.DataFrame
    """Other assets, each stopped at a random cycle before failure; same columns."""
    test_rul: np.ndarray
    """True RUL (int) after each test asset's last cycle, in asset_id order (like RUL_FD00N)."""


def condition_centroids(conditions: int) -> np.ndarray:
    """`[conditions, 3]` settings of each regime: the C-MAPSS six first, then fixed extra ones."""
    centroids = list(_CMAPSS_CONDITIONS[:conditions])
    rng = np.random.default_rng(_DESIGN_SEED)
    while len(centroids) < conditions:
        # Grid points inside the C-MAPSS envelope, kept apart so regimes stay separable.
        candidate = np.array([rng.integers(0, 43), round(rng.uniform(0, 0.84), 2),
                              rng.choice([60.0, 70.0, 80.0, 90.0, 100.0])], dtype=float)
        gaps = np.abs((np.array(centroids) - candidate) / _SETTINGS_SCALE).sum(axis=1)
        if gaps.min() > 0.25:
            centroids.append(candidate)
    return np.array(centroids)


def condition_levels(centroids: np.ndarray) -> np.ndarray:
    """`[conditions, 21]` sensor levels of each regime: log-linear in the settings."""
    z = np.column_stack([centroids[:, 0] / 42.0, centroids[:, 1] / 0.84,
                         (100.0 - centroids[:, 2]) / 40.0])
    return _LEVEL * np.exp(z @ _CONDITION_SLOPES.T)


def fault_signatures(fault_modes: int) -> np.ndarray:
    """`[fault_modes, 21]` relative sensor shift at failure: HPC, fan, then fixed extra ones."""
    signatures = list(_SIGNATURES[:fault_modes])
    informative = np.array([SENSORS.index(s) for s in INFORMATIVE_SENSORS])
    magnitude = np.abs(_SIGNATURES).max(axis=0)
    rng = np.random.default_rng(_DESIGN_SEED + 1)
    while len(signatures) < fault_modes:
        chosen = rng.choice(informative, size=rng.integers(6, len(informative) + 1), replace=False)
        candidate = np.zeros(len(SENSORS))
        candidate[chosen] = (rng.choice([-1.0, 1.0], size=len(chosen))
                             * magnitude[chosen] * rng.uniform(0.6, 1.6, size=len(chosen)))
        # Each mode must move the sensors in its own pattern, or the modes are indistinguishable.
        if not any(np.array_equal(np.sign(candidate), np.sign(s)) for s in signatures):
            signatures.append(candidate)
    return np.array(signatures)


def _weibull_shape(cv: float) -> float:
    """Weibull shape k whose coefficient of variation (std / mean) is `cv`, by bisection."""
    low, high = _WEIBULL_SHAPES
    for _ in range(60):  # cv falls as k grows; 60 halvings of the log-interval are exact enough
        mid = math.sqrt(low * high)
        mean = math.gamma(1.0 + 1.0 / mid)
        if math.sqrt(math.gamma(1.0 + 2.0 / mid) - mean**2) / mean > cv:
            low = mid
        else:
            high = mid
    return mid


def health_index(cycle: np.ndarray, wear: np.ndarray, onset: np.ndarray,
                 failure_time: np.ndarray, sharpness: np.ndarray) -> np.ndarray:
    """Health 1 - wear until `onset`, then an exponential fall reaching 0 at `failure_time`.

    h(t) = 1 - w - A (exp(b max(t - t0, 0)) - 1), with b = s / (T - t0) and A = (1 - w) / (e^s - 1),
    so h(T) = 0 exactly: the failure threshold. Arguments broadcast against each other.
    """
    rate = sharpness / (failure_time - onset)
    amplitude = (1.0 - wear) / np.expm1(sharpness)
    return 1.0 - wear - amplitude * np.expm1(rate * np.maximum(cycle - onset, 0.0))


@dataclass(frozen=True)
class _Assets:
    """The per-asset draws of one split, arrays of length n (offsets and gains n x 21)."""

    failure_time: np.ndarray
    """Continuous time at which health reaches 0; the last cycle is its ceiling."""
    onset: np.ndarray
    """Cycle at which degradation starts."""
    sharpness: np.ndarray
    """Rate times degradation duration."""
    wear: np.ndarray
    """Initial damage."""
    offsets: np.ndarray
    """Manufacturing variation: relative sensor offsets."""
    gains: np.ndarray
    """Relative sensor shift at failure: the fault mode's signature times a per-asset spread."""


def _draw_assets(config: SimulationConfig, rng: np.random.Generator) -> _Assets:
    n = config.assets
    excess = config.mean_lifetime - config.min_lifetime
    shape = _weibull_shape(config.lifetime_std / excess)
    scale = excess / math.gamma(1.0 + 1.0 / shape)
    # The last cycle is ceil(failure_time): >= min_lifetime, and on average mean_lifetime.
    failure_time = config.min_lifetime - 0.5 + scale * rng.weibull(shape, size=n)
    onset = failure_time * rng.uniform(*_ONSET_FRACTION, size=n)
    sharpness = rng.uniform(*_SHARPNESS, size=n)
    wear = rng.uniform(0.0, config.max_initial_wear, size=n)
    informative = np.isin(SENSORS, INFORMATIVE_SENSORS)
    offsets = rng.normal(size=(n, len(SENSORS))) * _NOISE * _MANUFACTURING_SPREAD * informative
    modes = rng.integers(config.fault_modes, size=n)
    spread = np.exp(_GAIN_SPREAD * rng.normal(size=(n, len(SENSORS))))
    gains = fault_signatures(config.fault_modes)[modes] * spread
    return _Assets(failure_time, onset, sharpness, wear, offsets, gains)


def simulate_trajectories(config: SimulationConfig, rng: np.random.Generator) -> pd.DataFrame:
    """`config.assets` full run-to-failure trajectories: each asset's last cycle is its failure."""
    assets = _draw_assets(config, rng)
    lifetimes = np.ceil(assets.failure_time).astype(np.int64)
    row_asset = np.repeat(np.arange(config.assets), lifetimes)
    starts = np.repeat(np.cumsum(lifetimes) - lifetimes, lifetimes)
    cycle = np.arange(len(row_asset)) - starts + 1
    health = health_index(cycle, assets.wear[row_asset], assets.onset[row_asset],
                          assets.failure_time[row_asset], assets.sharpness[row_asset])
    centroids = condition_centroids(config.conditions)
    regime = rng.integers(config.conditions, size=len(row_asset))
    settings = centroids[regime] + rng.normal(size=(len(row_asset), 3)) * _SETTINGS_JITTER
    noise = rng.normal(size=(len(row_asset), len(SENSORS))) * _NOISE * config.noise
    # Relative to the regime's level, so constant sensors stay exactly constant within a regime
    # and the damage moves every regime's readings by the same fraction.
    relative = (1.0 + assets.offsets[row_asset]
                + assets.gains[row_asset] * (1.0 - health)[:, None] + noise)
    sensors = condition_levels(centroids)[regime] * relative
    frame = pd.DataFrame(np.column_stack([settings, sensors]), columns=[*SETTINGS, *SENSORS])
    frame.insert(0, CYCLE, cycle.astype(np.int64))
    frame.insert(0, ASSET_ID, (row_asset + 1).astype(np.int64))
    return frame


def truncate_trajectories(full: pd.DataFrame, rng: np.random.Generator,
                          min_cycles: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Stop each run-to-failure trajectory at a uniform cycle in [min_cycles, lifetime - 1].

    Returns the truncated rows and, per asset in asset_id order, RUL = lifetime - kept cycles.
    """
    lifetimes = full.groupby(ASSET_ID, sort=True)[CYCLE].max()
    if (lifetimes <= min_cycles).any():
        short = lifetimes[lifetimes <= min_cycles]
        raise DataError(f"lifetime {short.iloc[0]} must exceed min_cycles={min_cycles}",
                        asset=short.index[0], column=CYCLE)
    kept = rng.integers(min_cycles, lifetimes.to_numpy())
    limit = full[ASSET_ID].map(pd.Series(kept, index=lifetimes.index))
    truncated = full[full[CYCLE].to_numpy() <= limit.to_numpy()].reset_index(drop=True)
    return truncated, (lifetimes.to_numpy() - kept).astype(np.int64)


def simulate_fleet(config: SimulationConfig) -> SimulatedFleet:
    """A training fleet run to failure and a test fleet of other assets truncated before it."""
    # Separate streams, so the training fleet does not change when test draws change.
    streams = np.random.SeedSequence(config.seed).spawn(2)
    train_rng, test_rng = (np.random.default_rng(stream) for stream in streams)
    train = simulate_trajectories(config, train_rng)
    test, test_rul = truncate_trajectories(simulate_trajectories(config, test_rng), test_rng,
                                           config.test_min_cycles)
    return SimulatedFleet(train=train, test=test, test_rul=test_rul)


def write_cmapss(fleet: SimulatedFleet, out_dir: Path | str,
                 subset: str = "SIM") -> dict[str, Path]:
    """Write train_{subset}.txt, test_{subset}.txt, RUL_{subset}.txt in NASA's text layout
    (whitespace-separated, 26 columns: unit, cycle, 3 settings, 21 sensors; RUL file one integer
    per line). Atomic: write to temp files in out_dir then os.replace, so no half-written file is
    left. Returns the paths by kind ('train', 'test', 'rul')."""
    if not re.fullmatch(r"[A-Za-z0-9_-]+", subset):
        raise ConfigError(f"subset must be letters, digits, '_' or '-', got {subset!r}")
    n_test = fleet.test[ASSET_ID].nunique()
    if len(fleet.test_rul) != n_test:
        raise DataError(f"test_rul has {len(fleet.test_rul)} labels for {n_test} test assets")
    out = Path(out_dir)
    make_folder(out)
    texts = {"train": _cmapss_text(fleet.train), "test": _cmapss_text(fleet.test),
             "rul": "".join(f"{int(r)}\n" for r in fleet.test_rul)}
    paths = {kind: out / f"{prefix}_{subset}.txt"
             for kind, prefix in (("train", "train"), ("test", "test"), ("rul", "RUL"))}
    temps: dict[str, str] = {}
    try:
        for kind, text in texts.items():
            temps[kind] = _write_temp(out, paths[kind].name, text)
        for kind, temp in temps.items():
            os.replace(temp, paths[kind])
    finally:
        for temp in temps.values():
            if os.path.exists(temp):
                os.unlink(temp)
    return paths


def _cmapss_text(frame: pd.DataFrame) -> str:
    # Six decimals round by at most 5e-7, far below the smallest scatter (setting_2, ~5e-4).
    return frame[CMAPSS_COLUMNS].to_csv(sep=" ", header=False, index=False,
                                        float_format="%.6f", lineterminator="\n")


def _write_temp(directory: Path, name: str, text: str) -> str:
    fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="ascii", newline="\n") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())  # the bytes are on disk before the rename makes them visible
    return temp
