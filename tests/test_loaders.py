"""Loaders: the real C-MAPSS sizes, CSV/Parquet/DataFrame, and one test per validation error."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rul.errors import DataError
from rul.fleet import Locator, check_rows, validate_fleet
from rul.loaders import (
    FleetColumns,
    fleet_from_dataframe,
    forecast_columns,
    load_cmapss,
    read_cmapss_file,
    read_fleet,
    read_rul_file,
)
from rul.schema import ASSET_ID, CMAPSS_COLUMNS, CYCLE, SENSORS, SETTINGS


@pytest.mark.parametrize(("subset", "part", "assets", "rows"), [
    ("FD001", "train", 100, 20_631),
    ("FD002", "train", 260, 53_759),
    ("FD003", "test", 100, 16_596),
    ("FD004", "test", 248, 41_214),
])
def test_real_cmapss_sizes(cmapss_dir: Path, subset: str, part: str, assets: int,
                           rows: int) -> None:
    data = load_cmapss(cmapss_dir, subset)
    fleet = getattr(data, part)
    assert fleet.n_assets == assets
    assert len(fleet.frame) == rows
    assert list(fleet.frame.columns) == CMAPSS_COLUMNS
    assert fleet.frame[CYCLE].dtype == np.int64


def test_real_labels_present_only_where_shipped(cmapss_dir: Path) -> None:
    fd001 = load_cmapss(cmapss_dir, "FD001")
    assert fd001.test_rul is not None and len(fd001.test_rul) == 100
    assert fd001.test_rul[0] == 112  # first line of NASA's RUL_FD001.txt
    assert load_cmapss(cmapss_dir, "FD002").test_rul is None


def test_plain_and_gzip_text_read_the_same(cmapss_dir: Path, tmp_path: Path) -> None:
    plain = tmp_path / "test_FD001.txt"
    plain.write_bytes(gzip.decompress((cmapss_dir / "test_FD001.txt.gz").read_bytes()))
    pd.testing.assert_frame_equal(read_cmapss_file(plain).frame,
                                  read_cmapss_file(cmapss_dir / "test_FD001.txt.gz").frame)


def test_simulated_fleet_loads_unchanged(sim) -> None:
    assert sim.train.n_assets == 24 and sim.test.n_assets == 24
    assert len(sim.test_rul) == 24


def _write_cmapss(path: Path, frame: pd.DataFrame) -> Path:
    path.write_text("\n".join(" ".join(str(v) for v in row) for row in frame.to_numpy()) + "\n")
    return path


def _small(sim) -> pd.DataFrame:
    frame = sim.train.frame
    return frame[frame[ASSET_ID] <= 3].copy()


def test_csv_and_parquet_round_trip(sim, tmp_path: Path) -> None:
    frame = _small(sim)
    frame.to_csv(tmp_path / "fleet.csv", index=False)
    frame.to_parquet(tmp_path / "fleet.parquet", index=False)
    for name in ("fleet.csv", "fleet.parquet"):
        fleet = read_fleet(tmp_path / name)
        assert fleet.settings == tuple(SETTINGS) and fleet.sensors == tuple(SENSORS)
        pd.testing.assert_frame_equal(fleet.frame, frame.reset_index(drop=True),
                                      check_dtype=False)


def test_configurable_column_names_and_string_ids(tmp_path: Path) -> None:
    frame = pd.DataFrame({"unit": ["pump-b", "pump-a", "pump-b"], "t": [1, 1, 2],
                          "load": [0.5, 0.6, 0.5], "vibration": [1.0, 2.0, 3.0]})
    frame.to_csv(tmp_path / "plant.csv", index=False)
    fleet = read_fleet(tmp_path / "plant.csv",
                       FleetColumns(asset_id="unit", cycle="t", settings=["load"],
                                    sensors=["vibration"]))
    assert fleet.frame[ASSET_ID].tolist() == ["pump-a", "pump-b", "pump-b"]
    assert fleet.frame[CYCLE].tolist() == [1, 1, 2]
    assert fleet.features == ["load", "vibration"]


def test_renamed_columns_may_not_clash_with_the_contract_names(tmp_path: Path) -> None:
    # A duty-cycle sensor called "cycle" beside the file's own cycle counter "t".
    frame = pd.DataFrame({"asset_id": [1, 1], "t": [1, 2], "cycle": [0.4, 0.5], "v": [1.0, 2]})
    frame.to_csv(tmp_path / "plant.csv", index=False)
    with pytest.raises(DataError) as info:
        read_fleet(tmp_path / "plant.csv", FleetColumns(cycle="t", sensors=["cycle", "v"]))
    assert "already has a column 'cycle'" in str(info.value)
    with pytest.raises(DataError) as info:
        fleet_from_dataframe(frame.drop(columns="t"), FleetColumns(sensors=["cycle", "v"]))
    assert "'cycle' is the asset id, cycle or timestamp column" in str(info.value)


def test_a_forecast_reads_the_age_input_by_the_files_name_for_the_cycle() -> None:
    columns = FleetColumns(asset_id="unit", cycle="t")
    assert forecast_columns(columns, ["s1", CYCLE]) == ["unit", "t", "s1"]
    assert forecast_columns(FleetColumns(), ["s1", CYCLE]) == [ASSET_ID, CYCLE, "s1"]


def test_interleaved_assets_are_grouped_in_cycle_order() -> None:
    frame = pd.DataFrame({ASSET_ID: [2, 1, 2, 1], CYCLE: [1, 1, 2, 2], "s": [1.0, 2, 3, 4]})
    fleet = fleet_from_dataframe(frame)
    assert fleet.frame[ASSET_ID].tolist() == [1, 1, 2, 2]
    assert fleet.frame["s"].tolist() == [2.0, 4.0, 1.0, 3.0]


def test_the_cycle_as_a_model_input_stays_whole() -> None:
    """A model that reads the asset's age lists `cycle` among its features: the fleet's cycle
    column keeps its integers (forecasts report it as last_cycle), and the checked rows hold
    it as numbers beside the sensors."""
    frame = pd.DataFrame({ASSET_ID: [2, 1, 2], CYCLE: [5, 1, 6], "s": [1.0, 2, 3]})
    fleet = validate_fleet(frame, (), ["s", CYCLE], Locator("<test>"))
    assert fleet.frame[CYCLE].dtype == np.int64 and fleet.frame[CYCLE].tolist() == [1, 5, 6]
    assert fleet.frame[fleet.features].to_numpy().tolist() == [[2, 1], [1, 5], [3, 6]]
    rows = check_rows(frame, ["s", CYCLE], Locator("<test>"))
    assert rows.values[CYCLE].tolist() == [5.0, 1.0, 6.0] and rows.cycles.dtype == np.int64


# --- one test per validation error: each names the place -----------------------------------

def _error(path: Path, **kwargs) -> DataError:
    with pytest.raises(DataError) as info:
        read_fleet(path, **kwargs)
    return info.value


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "train_X.txt").write_text("")
    error = _error(tmp_path / "train_X.txt")
    assert "empty" in str(error) and error.file.endswith("train_X.txt")


def test_missing_column_in_csv(sim, tmp_path: Path) -> None:
    _small(sim).drop(columns=[CYCLE]).to_csv(tmp_path / "f.csv", index=False)
    error = _error(tmp_path / "f.csv")
    assert "missing column 'cycle'" in str(error)


def test_extra_column_when_sensors_are_named(sim, tmp_path: Path) -> None:
    frame = _small(sim)
    frame["operator_note"] = 1.0
    frame.to_csv(tmp_path / "f.csv", index=False)
    error = _error(tmp_path / "f.csv", columns=FleetColumns(settings=SETTINGS, sensors=SENSORS))
    assert "unexpected columns ['operator_note']" in str(error)


def test_wrong_field_count_in_cmapss_line(sim, tmp_path: Path) -> None:
    path = _write_cmapss(tmp_path / "test_X.txt", _small(sim))
    lines = path.read_text().splitlines()
    lines[4] += " 1.0"
    path.write_text("\n".join(lines) + "\n")
    error = _error(path)
    assert error.line == 5 and "27" in str(error)


def test_non_numeric_cell(sim, tmp_path: Path) -> None:
    path = _write_cmapss(tmp_path / "train_X.txt", _small(sim))
    lines = path.read_text().splitlines()
    fields = lines[9].split()
    fields[7] = "n/a?"
    lines[9] = " ".join(fields)
    path.write_text("\n".join(lines) + "\n")
    error = _error(path)
    assert (error.line, error.column, error.asset) == (10, "sensor_3", 1)
    assert "non-numeric value 'n/a?'" in str(error)


@pytest.mark.parametrize(("value", "message"), [(np.nan, "missing value"),
                                                 (np.inf, "infinite value")])
def test_nan_and_inf(sim, tmp_path: Path, value: float, message: str) -> None:
    frame = _small(sim).reset_index(drop=True)
    frame.loc[6, "sensor_9"] = value
    frame.to_csv(tmp_path / "f.csv", index=False)
    error = _error(tmp_path / "f.csv")
    assert (error.line, error.column) == (8, "sensor_9")  # header is line 1
    assert message in str(error)


def test_duplicate_cycle(sim, tmp_path: Path) -> None:
    frame = _small(sim).reset_index(drop=True)
    frame.loc[3, CYCLE] = frame.loc[2, CYCLE]
    error = _parquet_error(frame, tmp_path)
    assert "duplicate cycle 3 after cycle 3" in str(error)
    assert (error.row, error.asset, error.column) == (4, 1, CYCLE)


def test_decreasing_cycle(sim, tmp_path: Path) -> None:
    frame = _small(sim).reset_index(drop=True)
    frame.loc[5, CYCLE] = 2
    error = _parquet_error(frame, tmp_path)
    assert "decreasing cycle 2 after cycle 5" in str(error) and error.row == 6


@pytest.mark.parametrize(("value", "message"), [(0, "cycle must be positive"),
                                                 (2.5, "cycle must be an integer")])
def test_bad_cycle_values(sim, tmp_path: Path, value: float, message: str) -> None:
    frame = _small(sim).reset_index(drop=True)
    frame[CYCLE] = frame[CYCLE].astype(float)
    frame.loc[0, CYCLE] = value
    assert message in str(_parquet_error(frame, tmp_path))


def _parquet_error(frame: pd.DataFrame, tmp_path: Path) -> DataError:
    frame.to_parquet(tmp_path / "f.parquet", index=False)
    return _error(tmp_path / "f.parquet")


def test_asset_with_no_rows(sim, tmp_path: Path) -> None:
    frame = _small(sim)
    path = _write_cmapss(tmp_path / "train_X.txt", frame[frame[ASSET_ID] != 2])
    error = _error(path)
    assert "asset 2 has no rows" in str(error) and error.asset == 2


def test_missing_asset_id(tmp_path: Path) -> None:
    pd.DataFrame({ASSET_ID: [1, None], CYCLE: [1, 2], "s": [1.0, 2.0]}).to_csv(
        tmp_path / "f.csv", index=False)
    error = _error(tmp_path / "f.csv")
    assert "missing asset_id" in str(error) and error.line == 3


def test_label_count_must_match_test_assets(sim_dir: Path, tmp_path: Path) -> None:
    for name in ("train_SIM.txt", "test_SIM.txt"):
        (tmp_path / name).write_bytes((sim_dir / name).read_bytes())
    (tmp_path / "RUL_SIM.txt").write_text("10\n20\n")
    with pytest.raises(DataError, match="2 labels for 24 test assets"):
        load_cmapss(tmp_path, "SIM")


def test_label_must_be_non_negative_integer(tmp_path: Path) -> None:
    (tmp_path / "RUL.txt").write_text("10\n-3\n")
    with pytest.raises(DataError) as info:
        read_rul_file(tmp_path / "RUL.txt", 2)
    assert info.value.line == 2


def test_missing_test_labels_mean_none(sim_dir: Path, tmp_path: Path) -> None:
    for name in ("train_SIM.txt", "test_SIM.txt"):
        (tmp_path / name).write_bytes((sim_dir / name).read_bytes())
    data = load_cmapss(tmp_path, "SIM")
    assert data.test is not None and data.test_rul is None


def test_unknown_subset_lists_what_is_there(sim_dir: Path) -> None:
    with pytest.raises(DataError, match=r"no train_FD009.*train_SIM.txt"):
        load_cmapss(sim_dir, "FD009")


def test_unknown_file_type(tmp_path: Path) -> None:
    (tmp_path / "fleet.xlsx").write_text("x")
    assert "unknown file type" in str(_error(tmp_path / "fleet.xlsx"))


def test_columns_are_canonical_for_cmapss(sim) -> None:
    assert list(sim.train.frame.columns) == CMAPSS_COLUMNS
