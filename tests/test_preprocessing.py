"""Feature selection, condition discovery and normalisation, fitted on training data only."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rul.config import DataConfig
from rul.errors import ConfigError
from rul.loaders import fleet_from_dataframe, load_cmapss
from rul.preprocessing import Preprocessing, fit_preprocessing
from rul.simulate import CONSTANT_SENSORS


def test_single_condition_fleet_gets_global_normalisation(sim) -> None:
    pre = fit_preprocessing(sim.train, DataConfig())
    assert pre.n_conditions == 1 and pre.settings == []
    assert pre.features == pre.sensors
    for sensor in CONSTANT_SENSORS:
        assert sensor not in pre.sensors and "constant" in pre.dropped[sensor]
    x = pre.transform_fleet(sim.train)
    # float32 arithmetic (as in the ONNX graph): a reading near 9000 carries ~5e-4 of rounding,
    # a few thousandths of a standard deviation for the quietest sensors.
    np.testing.assert_allclose(x.mean(0), 0, atol=5e-3)
    np.testing.assert_allclose(x.std(0), 1, atol=1e-3)


def test_conditions_are_discovered_and_normalised_per_condition(sim_multi) -> None:
    pre = fit_preprocessing(sim_multi.train, DataConfig())
    assert pre.n_conditions == 3
    assert pre.features[:3] == ["setting_1", "setting_2", "setting_3"]
    frame = sim_multi.train.frame
    x = pre.transform_fleet(sim_multi.train)
    condition = pre.condition_of(frame[pre.settings].to_numpy())
    assert set(np.unique(condition)) == {0, 1, 2}
    for k in range(3):
        np.testing.assert_allclose(x[condition == k].mean(0), 0, atol=5e-3)
        np.testing.assert_allclose(x[condition == k].std(0), 1, atol=1e-2)


def test_cycle_feature_feeds_the_age_as_the_last_normalised_input(sim_multi) -> None:
    plain = fit_preprocessing(sim_multi.train, DataConfig())
    pre = fit_preprocessing(sim_multi.train, DataConfig(cycle_feature=True))
    assert pre.features == [*plain.features, "cycle"]
    assert pre.sensors == [*plain.sensors, "cycle"] and pre.n_inputs == plain.n_inputs + 1
    frame = sim_multi.train.frame
    x = pre.transform_fleet(sim_multi.train)
    np.testing.assert_array_equal(x[:, :-1], plain.transform_fleet(sim_multi.train))
    condition = pre.condition_of(frame[pre.settings].to_numpy())
    for k in range(pre.n_conditions):  # the age is normalised per condition like a sensor
        age = frame["cycle"].to_numpy()[condition == k]
        np.testing.assert_allclose(x[condition == k, -1], (age - age.mean()) / age.std(),
                                   atol=1e-4)
    assert Preprocessing.from_dict(json.loads(json.dumps(pre.to_dict()))) == pre


def test_global_normalisation_can_be_forced(sim_multi) -> None:
    pre = fit_preprocessing(sim_multi.train, DataConfig(normalisation="global"))
    assert pre.n_conditions == 1


def test_condition_normalisation_without_regimes_is_an_error(sim) -> None:
    with pytest.raises(ConfigError, match="no distinct operating regimes"):
        fit_preprocessing(sim.train, DataConfig(normalisation="condition"))


def test_a_fleet_without_a_varying_sensor_is_summarised_not_listed(sim) -> None:
    one_row = fleet_from_dataframe(sim.train.frame.head(1))
    with pytest.raises(ConfigError) as info:
        fit_preprocessing(one_row, DataConfig())
    message = str(info.value)
    assert "no sensor is left to learn from (constant within operating conditions: " in message
    assert "..." in message and "(21 sensors)); the fleet has only 1 row" in message
    assert "sensor_21" not in message  # four names, then the count


def test_real_fd001_keeps_the_usual_fourteen_sensors(cmapss_dir) -> None:
    pre = fit_preprocessing(load_cmapss(cmapss_dir, "FD001").train, DataConfig())
    usual = [2, 3, 4, 7, 8, 9, 11, 12, 13, 14, 15, 17, 20, 21]
    assert pre.sensors == [f"sensor_{i}" for i in usual]


def test_real_fd002_has_six_operating_conditions(cmapss_dir) -> None:
    assert fit_preprocessing(load_cmapss(cmapss_dir, "FD002").train, DataConfig()).n_conditions == 6


def test_statistics_round_trip_through_json(sim_multi) -> None:
    pre = fit_preprocessing(sim_multi.train, DataConfig())
    again = Preprocessing.from_dict(json.loads(json.dumps(pre.to_dict())))
    raw = sim_multi.test.frame[pre.features].to_numpy()
    np.testing.assert_array_equal(again.transform(raw), pre.transform(raw))


def test_inconsistent_statistics_are_refused(sim) -> None:
    values = fit_preprocessing(sim.train, DataConfig()).to_dict()
    values["std"] = [row[:-1] for row in values["std"]]
    with pytest.raises(ConfigError, match="do not match"):
        Preprocessing.from_dict(values)


def test_fitted_on_training_rows_only(sim) -> None:
    """Statistics come from the fleet given: another fleet's readings do not move them."""
    pre = fit_preprocessing(sim.train, DataConfig())
    shifted = sim.train.frame.copy()
    shifted[pre.sensors] += 1000.0
    other = fit_preprocessing(fleet_from_dataframe(shifted), DataConfig())
    np.testing.assert_allclose(np.array(other.mean) - 1000.0, pre.mean, rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(other.std, pre.std, rtol=1e-6)


def test_transform_rejects_wrong_width(sim) -> None:
    pre = fit_preprocessing(sim.train, DataConfig())
    with pytest.raises(ValueError, match="expected"):
        pre.transform(np.zeros((2, pre.n_features + 1)))


@settings(max_examples=30, deadline=None)
@given(scale=st.floats(0.1, 1e3), shift=st.floats(-1e3, 1e3), seed=st.integers(0, 1000))
def test_normalisation_is_invariant_to_affine_sensor_units(scale: float, shift: float,
                                                           seed: int) -> None:
    """Changing a sensor's units (a x + b, a > 0) leaves the normalised inputs unchanged."""
    rng = np.random.default_rng(seed)
    n = 60
    frame = pd.DataFrame({"asset_id": np.repeat([1, 2, 3], n // 3),
                          "cycle": np.tile(np.arange(1, n // 3 + 1), 3),
                          "a": rng.normal(size=n), "b": rng.normal(5, 2, size=n)})
    pre = fit_preprocessing(fleet_from_dataframe(frame), DataConfig())
    moved = frame.assign(b=frame["b"] * scale + shift)
    pre_moved = fit_preprocessing(fleet_from_dataframe(moved), DataConfig())
    np.testing.assert_allclose(pre_moved.transform(moved[["a", "b"]].to_numpy()),
                               pre.transform(frame[["a", "b"]].to_numpy()), atol=1e-3)


@pytest.mark.parametrize(("values", "message"), [
    ({"window": "abc"}, "window must be an integer, got 'abc'"),
    ({"window": 0}, "window must be >= 1, got 0"),
    ({"normalisation": "minmax"}, "normalisation must be one of"),
    ({"validation_fraction": 1.0}, "validation_fraction must be in [0, 1)"),
    ({"windw": 3}, "unknown keys ['windw']"),
    ({"padded_windows": "yes"}, "padded_windows must be true or false, got 'yes'"),
    ({"cycle_feature": 1}, "cycle_feature must be true or false, got 1"),
])
def test_data_config_errors_name_the_field(values: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        DataConfig.from_dict(values)
    assert message in str(info.value)
