"""The one preprocessing definition: feature selection and normalisation per operating condition.

Fitted on training data only; the result is plain numbers (`Preprocessing.to_dict`) that travel
in the model card and are rebuilt inside the ONNX graph by export. The arithmetic is:

    z      = (settings - settings_mean) / settings_std         # standardised settings
    k      = argmin_j ||z - centroids[j]||^2                    # operating condition per cycle
    output = (sensors - mean[k]) / std[k]                       # per-condition z-score

With one condition (global normalisation) k is always 0 and settings are not inputs at all.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from rul.config import DataConfig
from rul.errors import ConfigError
from rul.fleet import Fleet
from rul.schema import CYCLE

# Clusters this tight (within-cluster variance / total variance of standardised settings)
# are distinct operating regimes. C-MAPSS FD002/FD004 fall from 7e-3 at k=5 to 1.5e-6 at k=6;
# FD001's settings are pure noise and stay above 0.1 for every k.
REGIME_TIGHTNESS = 1e-3
_DISCOVERY_SAMPLE = 5_000
_RESTARTS = 3
_STD_FLOOR = 1e-6


@dataclass(frozen=True)
class Preprocessing:
    """Fitted preprocessing: which columns go in, and the statistics that normalise them."""

    features: list[str]
    """Input columns, in the order of the model's `readings` tensor: settings used, then sensors."""
    settings: list[str]
    """Settings that assign the operating condition (empty with one condition)."""
    sensors: list[str]
    """The normalised model inputs: the selected sensors, then `cycle` when the run feeds the
    asset's age (DataConfig.cycle_feature)."""
    settings_mean: list[float]
    settings_std: list[float]
    centroids: list[list[float]]
    """[conditions, settings] in standardised-settings space."""
    mean: list[list[float]]
    """[conditions, sensors]."""
    std: list[list[float]]
    """[conditions, sensors]."""
    dropped: dict[str, str] = field(default_factory=dict)
    """Sensors left out, with the reason (for the model card)."""

    @property
    def n_conditions(self) -> int:
        return len(self.mean)

    @property
    def n_features(self) -> int:
        return len(self.features)

    @property
    def n_inputs(self) -> int:
        """Width of the normalised model input."""
        return len(self.sensors)

    def condition_of(self, settings: np.ndarray) -> np.ndarray:
        """Operating condition (0..K-1) of each row of a [..., n_settings] array."""
        if self.n_conditions == 1:
            return np.zeros(settings.shape[:-1], dtype=np.int64)
        return nearest_centroid(settings, self.settings_mean, self.settings_std, self.centroids)

    def transform(self, readings: np.ndarray) -> np.ndarray:
        """Normalise raw readings [..., n_features] (card order) to float32 [..., n_inputs].

        The arithmetic is float32, operation for operation what the ONNX graph does, so the
        model sees the same numbers in training, evaluation and serving."""
        readings = np.asarray(readings, dtype=np.float32)
        if readings.shape[-1] != self.n_features:
            raise ValueError(f"readings have {readings.shape[-1]} columns, expected "
                             f"{self.n_features} ({self.features})")
        n_settings = len(self.settings)
        condition = self.condition_of(readings[..., :n_settings])
        sensors = readings[..., n_settings:]
        return (sensors - _f32(self.mean)[condition]) / _f32(self.std)[condition]

    def transform_fleet(self, fleet: Fleet) -> np.ndarray:
        """Normalised inputs for every row of a fleet, [rows, n_inputs]."""
        missing = [c for c in self.features if c not in fleet.frame.columns]
        if missing:
            raise ValueError(f"{fleet.source}: missing columns {missing} the model needs")
        return self.transform(fleet.frame[self.features].to_numpy(dtype=np.float32))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Preprocessing:
        try:
            pre = cls(**values)
        except TypeError as exc:
            raise ConfigError(f"preprocessing: {exc}") from None
        k, s = len(pre.mean), len(pre.sensors)
        if (np.shape(pre.std) != (k, s) or np.shape(pre.mean) != (k, s)
                or pre.features != [*pre.settings, *pre.sensors]
                or (k > 1 and np.shape(pre.centroids) != (k, len(pre.settings)))):
            raise ConfigError("preprocessing: statistics do not match the feature lists")
        return pre


def _dropped_summary(dropped: dict[str, str], shown: int = 4) -> str:
    """{sensor: reason} as one short clause per reason: 'constant within operating
    conditions: sensor_1, sensor_2, ... (21 sensors)'."""
    by_reason: dict[str, list[str]] = {}
    for name, reason in dropped.items():
        by_reason.setdefault(reason, []).append(name)
    parts = []
    for reason, names in by_reason.items():
        listed = ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")
        parts.append(f"{reason}: {listed} ({len(names)} sensor{'s' * (len(names) != 1)})")
    return "; ".join(parts)


def fit_preprocessing(fleet: Fleet, config: DataConfig) -> Preprocessing:
    """Decide conditions, select sensors and fit the normalisation on training data."""
    settings_values = fleet.frame[list(fleet.settings)].to_numpy(dtype=np.float64)
    sensors_values = fleet.frame[list(fleet.sensors)].to_numpy(dtype=np.float64)
    settings_mean, settings_std = _mean_std(settings_values)
    z = (settings_values - settings_mean) / settings_std
    centroids = _conditions(z, config)
    k = len(centroids)
    condition = (np.zeros(len(z), dtype=np.int64) if k == 1
                 else nearest_centroid(settings_values, settings_mean, settings_std, centroids))

    keep, dropped = _select_sensors(sensors_values, condition, k, list(fleet.sensors),
                                    config.near_constant_fraction)
    if not keep:
        rows = len(fleet.frame)
        raise ConfigError(f"{fleet.source}: no sensor is left to learn from ("
                          f"{_dropped_summary(dropped)})"
                          + (f"; the fleet has only {rows} row{'s' * (rows != 1)}"
                             if rows < 3 else ""))
    chosen = sensors_values[:, keep]
    sensors = [fleet.sensors[i] for i in keep]
    if config.cycle_feature:  # the age, normalised like a sensor (its statistics barely
        # differ between conditions, and one code path keeps the ONNX graph unchanged)
        chosen = np.column_stack([chosen, fleet.frame[CYCLE].to_numpy(dtype=np.float64)])
        sensors.append(CYCLE)
    mean = np.stack([chosen[condition == j].mean(axis=0) for j in range(k)])
    std = np.stack([_mean_std(chosen[condition == j])[1] for j in range(k)])
    settings = list(fleet.settings) if k > 1 else []
    return Preprocessing(
        features=[*settings, *sensors],
        settings=settings,
        sensors=sensors,
        settings_mean=settings_mean.tolist() if k > 1 else [],
        settings_std=settings_std.tolist() if k > 1 else [],
        centroids=centroids.tolist() if k > 1 else [[]],
        mean=mean.tolist(),
        std=std.tolist(),
        dropped=dropped,
    )


def nearest_centroid(settings: np.ndarray, mean: Any, std: Any, centroids: Any) -> np.ndarray:
    """The condition of each row of raw settings [..., S]: standardise, then the nearest centroid
    as argmin_k (|c_k|^2 - 2 z.c_k) (|z|^2 is the same for every k): one small matrix product,
    in float32, as the ONNX graph computes it. Fitting and transforming both use this."""
    z = (np.asarray(settings, dtype=np.float32) - _f32(mean)) / _f32(std)
    c = _f32(centroids)
    return ((c * c).sum(-1) - 2.0 * (z @ c.T)).argmin(axis=-1)


def discover_conditions(z: np.ndarray, max_conditions: int, seed: int) -> np.ndarray:
    """Centroids of the operating regimes in standardised settings [N, S]: the smallest k whose
    k-means clusters are tight (REGIME_TIGHTNESS); one centroid when no k is."""
    if z.shape[1] == 0 or len(z) < 2:
        return np.zeros((1, z.shape[1]))
    sample = _sample(z, _DISCOVERY_SAMPLE, seed)
    total = ((sample - sample.mean(0)) ** 2).sum()
    if total == 0:
        return sample.mean(0, keepdims=True)
    for k in range(2, max_conditions + 1):
        centroids, inertia = best_kmeans(sample, k, seed)
        if inertia / total < REGIME_TIGHTNESS:
            return centroids
    return sample.mean(0, keepdims=True)


def kmeans(x: np.ndarray, k: int, seed: int, iterations: int = 50) -> tuple[np.ndarray, float]:
    """Lloyd's k-means with k-means++ seeding; returns (centroids sorted for stability, inertia)."""
    rng = np.random.default_rng(seed)
    centroids = [x[rng.integers(len(x))]]
    for _ in range(1, k):
        d = np.min([((x - c) ** 2).sum(1) for c in centroids], axis=0)
        if d.sum() == 0:
            break
        centroids.append(x[rng.choice(len(x), p=d / d.sum())])
    centroids = np.array(centroids)
    for _ in range(iterations):
        labels = ((x[:, None, :] - centroids) ** 2).sum(-1).argmin(1)
        updated = np.array([x[labels == j].mean(0) if (labels == j).any() else centroids[j]
                            for j in range(len(centroids))])
        if np.allclose(updated, centroids):
            break
        centroids = updated
    labels = ((x[:, None, :] - centroids) ** 2).sum(-1).argmin(1)
    inertia = float(((x - centroids[labels]) ** 2).sum())
    # Sort lexicographically so the condition numbering does not depend on the seed.
    order = np.lexsort(centroids.T[::-1])
    return centroids[order], inertia


def best_kmeans(x: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, float]:
    """The lowest-inertia of a few seeded k-means runs (one run can land in a local minimum)."""
    return min((kmeans(x, k, seed + r) for r in range(_RESTARTS)), key=lambda result: result[1])


def _conditions(z: np.ndarray, config: DataConfig) -> np.ndarray:
    if config.normalisation == "global":
        return np.zeros((1, z.shape[1]))
    if config.conditions is not None:
        if config.conditions == 1:
            return np.zeros((1, z.shape[1]))
        return best_kmeans(_sample(z, _DISCOVERY_SAMPLE, config.seed), config.conditions,
                           config.seed)[0]
    found = discover_conditions(z, config.max_conditions, config.seed)
    if config.normalisation == "condition" and len(found) == 1:
        raise ConfigError("normalisation 'condition': the settings show no distinct operating "
                          "regimes; use 'global' or give conditions")
    return found


def _select_sensors(values: np.ndarray, condition: np.ndarray, k: int, names: list[str],
                    fraction: float) -> tuple[list[int], dict[str, str]]:
    keep, dropped = [], {}
    for i, name in enumerate(names):
        dominant = 0.0
        for j in range(k):
            column = values[condition == j, i]
            if len(column):
                _, counts = np.unique(column, return_counts=True)
                dominant += counts.max()
        share = dominant / len(values)
        if share >= fraction:
            what = "constant" if share == 1.0 else f"near-constant ({share:.1%} one value)"
            dropped[name] = f"{what} within operating conditions"
        else:
            keep.append(i)
    return keep, dropped


def _f32(values: list) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)


def _mean_std(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = values.mean(axis=0)
    std = values.std(axis=0)
    # A floor keeps a constant column finite without letting it blow up small noise.
    return mean, np.maximum(std, _STD_FLOOR * (np.abs(mean) + 1.0))


def _sample(x: np.ndarray, n: int, seed: int) -> np.ndarray:
    if len(x) <= n:
        return x
    return x[np.random.default_rng(seed).choice(len(x), n, replace=False)]
