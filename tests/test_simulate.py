"""The fleet simulator: determinism, the data shape, the physics it claims, and its text files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rul.simulate as simulate
from rul.errors import ConfigError
from rul.schema import ASSET_ID, CMAPSS_COLUMNS, CYCLE, SENSORS, SETTINGS
from rul.simulate import (
    CONSTANT_SENSORS,
    INFORMATIVE_SENSORS,
    NOISE_SENSORS,
    SimulatedFleet,
    SimulationConfig,
    condition_centroids,
    fault_signatures,
    health_index,
    simulate_fleet,
    simulate_trajectories,
    truncate_trajectories,
    write_cmapss,
)


@pytest.fixture(scope="module")
def fleet() -> SimulatedFleet:
    return simulate_fleet(SimulationConfig(assets=60, seed=7))


def _with_rul(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(rul=frame.groupby(ASSET_ID)[CYCLE].transform("max") - frame[CYCLE])


def test_same_seed_gives_the_same_fleet_and_other_seeds_differ() -> None:
    config = SimulationConfig(assets=5, seed=11, conditions=3, fault_modes=2)
    first, again = simulate_fleet(config), simulate_fleet(config)
    pd.testing.assert_frame_equal(first.train, again.train)
    pd.testing.assert_frame_equal(first.test, again.test)
    np.testing.assert_array_equal(first.test_rul, again.test_rul)
    other = simulate_fleet(SimulationConfig(assets=5, seed=12, conditions=3, fault_modes=2))
    assert not first.train[SENSORS].head(100).equals(other.train[SENSORS].head(100))
    assert not np.array_equal(first.test_rul, other.test_rul)


def test_columns_dtypes_and_asset_ids(fleet: SimulatedFleet) -> None:
    for frame in (fleet.train, fleet.test):
        assert list(frame.columns) == CMAPSS_COLUMNS
        assert frame[ASSET_ID].dtype == np.int64 and frame[CYCLE].dtype == np.int64
        assert all(frame[c].dtype == np.float64 for c in SETTINGS + SENSORS)
        assert np.isfinite(frame[SETTINGS + SENSORS].to_numpy()).all()
        assert sorted(frame[ASSET_ID].unique()) == list(range(1, 61))
    assert fleet.test_rul.shape == (60,) and fleet.test_rul.dtype == np.int64


def test_cycles_run_from_one_without_gaps(fleet: SimulatedFleet) -> None:
    for frame in (fleet.train, fleet.test):
        for _, cycles in frame.groupby(ASSET_ID)[CYCLE]:
            np.testing.assert_array_equal(cycles.to_numpy(), np.arange(1, len(cycles) + 1))


def test_lifetimes_look_like_fd001() -> None:
    lifetimes = simulate_fleet(SimulationConfig(seed=3)).train.groupby(ASSET_ID)[CYCLE].max()
    assert lifetimes.min() >= 128 and lifetimes.max() < 450
    assert 185 < lifetimes.mean() < 230 and 25 < lifetimes.std() < 70


@pytest.mark.parametrize("conditions", [1, 2, 6, 10])
def test_settings_form_one_cluster_per_condition(conditions: int) -> None:
    train = simulate_fleet(SimulationConfig(assets=8, conditions=conditions)).train
    # Regime centroids sit on a grid far coarser than the jitter, so rounding recovers them.
    regimes = train[SETTINGS].round({"setting_1": 0, "setting_2": 2, "setting_3": 0})
    counts = regimes.value_counts()
    assert len(counts) == conditions
    assert counts.min() > 0.5 * len(train) / conditions  # drawn about equally often
    np.testing.assert_allclose(np.sort(counts.index.to_frame().to_numpy(), axis=0),
                               np.sort(condition_centroids(conditions), axis=0))
    jitter = (train[SETTINGS].to_numpy() - regimes.to_numpy()).std(axis=0)
    assert (jitter < 0.01).all()


def test_condition_moves_every_sensor_and_leaves_constants_constant() -> None:
    train = simulate_fleet(SimulationConfig(assets=10, conditions=6, seed=2)).train
    regime = train["setting_1"].round(0)
    assert (train.groupby(regime)[CONSTANT_SENSORS].nunique() == 1).all().all()
    means = train.groupby(regime)[SENSORS].mean()
    assert (means.max() / means.min() > 1.01).all()  # every sensor jumps between regimes


def test_informative_sensors_track_rul_and_the_others_do_not(fleet: SimulatedFleet) -> None:
    train = _with_rul(fleet.train)
    correlation = train[INFORMATIVE_SENSORS + NOISE_SENSORS].corrwith(train["rul"])
    assert (correlation[INFORMATIVE_SENSORS].abs() > 0.3).all(), correlation
    assert (correlation[NOISE_SENSORS].abs() < 0.05).all(), correlation
    assert (train[NOISE_SENSORS].std() > 0).all()
    assert (train[CONSTANT_SENSORS].nunique() == 1).all()


def test_noiseless_sensor_is_flat_until_onset_then_rises() -> None:
    train = simulate_fleet(SimulationConfig(assets=5, noise=0.0)).train
    for _, asset in train.groupby(ASSET_ID):
        level = asset["sensor_4"].to_numpy()  # rises with damage under the HPC fault
        assert (np.diff(level) >= -1e-9).all()
        assert level[0] == level[10]  # still before the onset (>= 15 % of life)
        assert level[-1] - level[0] > 0.015 * level[0]
        late = np.diff(level)[-20:]
        assert (np.diff(late) > 0).all()  # accelerating: exponential damage


def test_fault_modes_have_their_own_sign_patterns() -> None:
    signs = np.sign(fault_signatures(simulate.MAX_FAULT_MODES))
    assert len({tuple(row) for row in signs}) == simulate.MAX_FAULT_MODES
    assert (signs[:, [SENSORS.index(s) for s in CONSTANT_SENSORS + NOISE_SENSORS]] == 0).all()

    def drift_signs(fault_modes: int) -> set[float]:
        train = simulate_fleet(SimulationConfig(assets=20, fault_modes=fault_modes,
                                                noise=0.0)).train
        drift = train.groupby(ASSET_ID)["sensor_12"].agg(lambda s: s.iloc[-1] - s.iloc[0])
        return set(np.sign(drift))

    assert drift_signs(1) == {-1.0}  # HPC fault: fuel flow ratio falls
    assert drift_signs(2) == {-1.0, 1.0}  # the fan fault makes it rise


def test_health_index_is_flat_then_exponential_to_zero_at_failure() -> None:
    cycles = np.arange(0, 201, dtype=float)
    wear, onset, failure, sharpness = 0.05, 60.0, 200.0, 3.0
    health = health_index(cycles, wear, onset, failure, sharpness)
    np.testing.assert_allclose(health[:61], 1 - wear)
    assert health[-1] == pytest.approx(0.0, abs=1e-12)
    assert (np.diff(health[60:]) < 0).all()
    # Damage above the plateau plus the amplitude grows by a constant factor per cycle.
    amplitude = (1 - wear) / np.expm1(sharpness)
    growth = np.diff(np.log(1 - wear - health[60:] + amplitude))
    np.testing.assert_allclose(growth, sharpness / (failure - onset))


def test_truncation_labels_are_lifetime_minus_kept_cycles() -> None:
    config = SimulationConfig(assets=12, conditions=2)
    full = simulate_trajectories(config, np.random.default_rng(5))
    truncated, rul = truncate_trajectories(full, np.random.default_rng(6), min_cycles=31)
    lifetimes = full.groupby(ASSET_ID)[CYCLE].max().to_numpy()
    kept = truncated.groupby(ASSET_ID)[CYCLE].max().to_numpy()
    np.testing.assert_array_equal(rul, lifetimes - kept)
    assert (rul >= 1).all() and (kept >= 31).all()
    prefix = full.merge(truncated[[ASSET_ID, CYCLE]], on=[ASSET_ID, CYCLE])
    pd.testing.assert_frame_equal(prefix, truncated)


def test_test_set_is_other_assets_stopped_before_failure(fleet: SimulatedFleet) -> None:
    lengths = fleet.test.groupby(ASSET_ID)[CYCLE].max().to_numpy()
    assert (fleet.test_rul >= 1).all() and (lengths >= 31).all()
    assert (lengths + fleet.test_rul >= 128).all()
    first_train = fleet.train[fleet.train[CYCLE] == 1][SENSORS].to_numpy()
    first_test = fleet.test[fleet.test[CYCLE] == 1][SENSORS].to_numpy()
    assert not np.isclose(first_train, first_test).all(axis=1).any()


def test_write_cmapss_round_trips(tmp_path: Path) -> None:
    small = simulate_fleet(SimulationConfig(assets=4, conditions=6, seed=1))
    paths = write_cmapss(small, tmp_path / "out", subset="SIM1")
    assert {k: p.name for k, p in paths.items()} == {
        "train": "train_SIM1.txt", "test": "test_SIM1.txt", "rul": "RUL_SIM1.txt"}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        p.name for p in paths.values())  # no temporary files left behind
    for kind in ("train", "test"):
        back = pd.read_csv(paths[kind], sep=r"\s+", header=None)
        frame = getattr(small, kind)
        assert back.shape == (len(frame), 26)
        np.testing.assert_array_equal(back.iloc[:, :2].to_numpy(), frame.iloc[:, :2].to_numpy())
        np.testing.assert_allclose(back.iloc[:, 2:].to_numpy(), frame.iloc[:, 2:].to_numpy(),
                                   rtol=0, atol=5.1e-7)
    rul = pd.read_csv(paths["rul"], sep=r"\s+", header=None)
    np.testing.assert_array_equal(rul[0].to_numpy(), small.test_rul)


def test_write_cmapss_leaves_old_files_when_writing_fails(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    small = simulate_fleet(SimulationConfig(assets=2))
    paths = write_cmapss(small, tmp_path)
    before = {p: p.read_bytes() for p in paths.values()}
    real_write = simulate._write_temp

    def fail_on_labels(directory: Path, name: str, text: str) -> str:
        if name.startswith("RUL"):
            raise OSError("disk full")
        return real_write(directory, name, text)

    monkeypatch.setattr(simulate, "_write_temp", fail_on_labels)
    with pytest.raises(OSError, match="disk full"):
        write_cmapss(simulate_fleet(SimulationConfig(assets=2, seed=1)), tmp_path)
    assert {p: p.read_bytes() for p in paths.values()} == before
    assert sorted(tmp_path.iterdir()) == sorted(paths.values())


def test_write_cmapss_rejects_a_bad_subset_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="subset"):
        write_cmapss(simulate_fleet(SimulationConfig(assets=1)), tmp_path, subset="../x")


@pytest.mark.parametrize(("field", "value"), [
    ("assets", 0), ("assets", 2.5), ("assets", True), ("seed", -1), ("conditions", 0),
    ("conditions", simulate.MAX_CONDITIONS + 1), ("fault_modes", 0),
    ("fault_modes", simulate.MAX_FAULT_MODES + 1), ("min_lifetime", 1),
    ("mean_lifetime", 100.0), ("mean_lifetime", float("nan")), ("lifetime_std", 0.0),
    ("lifetime_std", 1000.0),
    ("max_initial_wear", -0.1), ("max_initial_wear", 0.9), ("noise", -1.0),
    ("test_min_cycles", 0), ("test_min_cycles", 128),
])
def test_config_rejects_bad_values(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"SimulationConfig\.{field} .*got {value!r}"):
        SimulationConfig(**{field: value})


@settings(max_examples=25, deadline=None)
@given(assets=st.integers(1, 4), seed=st.integers(0, 2**32),
       conditions=st.integers(1, simulate.MAX_CONDITIONS),
       fault_modes=st.integers(1, simulate.MAX_FAULT_MODES),
       min_lifetime=st.integers(40, 200), test_min_cycles=st.integers(1, 39))
def test_any_valid_config_gives_a_consistent_fleet(assets: int, seed: int, conditions: int,
                                                   fault_modes: int, min_lifetime: int,
                                                   test_min_cycles: int) -> None:
    config = SimulationConfig(assets=assets, seed=seed, conditions=conditions,
                              fault_modes=fault_modes, min_lifetime=min_lifetime,
                              mean_lifetime=min_lifetime + 50.0, lifetime_std=20.0,
                              test_min_cycles=test_min_cycles)
    fleet = simulate_fleet(config)
    lifetimes = fleet.train.groupby(ASSET_ID)[CYCLE].agg(["max", "size"])
    assert (lifetimes["max"] == lifetimes["size"]).all()
    assert (lifetimes["max"] >= min_lifetime).all()
    kept = fleet.test.groupby(ASSET_ID)[CYCLE].max().to_numpy()
    assert len(kept) == len(fleet.test_rul) == assets
    assert (kept >= test_min_cycles).all() and (fleet.test_rul >= 1).all()
    assert (kept + fleet.test_rul >= min_lifetime).all()
    assert np.isfinite(fleet.train[SENSORS].to_numpy()).all()
