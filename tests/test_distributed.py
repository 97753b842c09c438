"""`rul.distributed`: the Dask path gives exactly the single-process batch forecast."""

from __future__ import annotations

import builtins
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rul.batch import forecast_file
from rul.distributed import forecast_distributed, forecast_distributed_rows, forecast_partition
from rul.errors import DataError, RulError
from rul.forecaster import Forecaster
from rul.loaders import fleet_from_dataframe
from rul.simulate import SimulationConfig, simulate_fleet

pytest.importorskip("dask.dataframe")
pytest.importorskip("distributed")
pytest.importorskip("pyarrow")

MODEL = Path(__file__).resolve().parents[1] / "checkpoints" / "cmapss-fd001.onnx"


@pytest.fixture(scope="module")
def fleet() -> pd.DataFrame:
    return simulate_fleet(SimulationConfig(assets=40, seed=1)).test


def write_parts(frame: pd.DataFrame, directory: Path, parts: int = 4) -> Path:
    """Part files of consecutive rows, so that assets are split across files."""
    directory.mkdir()
    for i, part in enumerate(np.array_split(np.arange(len(frame)), parts)):
        frame.iloc[part].to_parquet(directory / f"part-{i}.parquet", index=False)
    return directory


@pytest.fixture(scope="module")
def cluster():
    """One local cluster of 2 worker processes for the module's cluster tests."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as local:
        yield local.scheduler_address


def test_partition_function_is_the_fleet_forecast(fleet: pd.DataFrame) -> None:
    model = Forecaster.load(MODEL)
    expected = model.forecast_fleet(fleet_from_dataframe(fleet))
    pd.testing.assert_frame_equal(forecast_partition(fleet, MODEL), expected, check_exact=True)


@pytest.mark.slow
def test_local_cluster_equals_forecast_file(fleet: pd.DataFrame, tmp_path: Path) -> None:
    parts = write_parts(fleet, tmp_path / "fleet")
    first = pd.read_parquet(parts / "part-0.parquet")
    second = pd.read_parquet(parts / "part-1.parquet")
    assert set(first.asset_id) & set(second.asset_id), "an asset should span two files"
    whole = tmp_path / "fleet.parquet"
    fleet.to_parquet(whole, index=False)
    # Batches of 8 assets: 5 partitions over 2 workers, each predicting forecast_file's batches.
    expected = forecast_file(Forecaster.load(MODEL, batch_size=8), whole)

    table, rows = forecast_distributed_rows(MODEL, parts, scheduler="local", batch_size=8)

    pd.testing.assert_frame_equal(table, expected, check_exact=True)
    assert rows == len(fleet)


@pytest.mark.slow
def test_scheduler_address_and_glob(fleet: pd.DataFrame, tmp_path: Path, cluster: str) -> None:
    parts = write_parts(fleet, tmp_path / "fleet", parts=3)
    expected = forecast_file(Forecaster.load(MODEL), parts / "part-1.parquet")
    assert len(expected) < fleet.asset_id.nunique()
    table = forecast_distributed(MODEL, parts / "part-1.parquet", scheduler=cluster)
    pd.testing.assert_frame_equal(table, expected, check_exact=True)
    table = forecast_distributed(MODEL, str(parts / "part-*.parquet"), scheduler=cluster)
    assert len(table) == fleet.asset_id.nunique()


@pytest.mark.slow
def test_csv_part_files(fleet: pd.DataFrame, tmp_path: Path, cluster: str) -> None:
    (tmp_path / "fleet").mkdir()
    for i, part in enumerate(np.array_split(np.arange(len(fleet)), 3)):
        fleet.iloc[part].to_csv(tmp_path / "fleet" / f"part-{i}.csv.gz", index=False)
    fleet.to_csv(tmp_path / "fleet.csv", index=False)
    expected = forecast_file(Forecaster.load(MODEL, batch_size=16), tmp_path / "fleet.csv")
    table = forecast_distributed(MODEL, tmp_path / "fleet", scheduler=cluster, batch_size=16)
    pd.testing.assert_frame_equal(table, expected, check_exact=True)


@pytest.mark.slow
def test_bad_partition_is_a_data_error(fleet: pd.DataFrame, tmp_path: Path,
                                       cluster: str) -> None:
    bad = fleet.copy()
    bad.loc[bad.index[100], "sensor_2"] = np.nan
    parts = write_parts(bad, tmp_path / "fleet")
    with pytest.raises(DataError, match="sensor_2") as caught:
        forecast_distributed(MODEL, parts, scheduler=cluster)
    assert caught.value.column == "sensor_2"
    assert caught.value.asset == bad.asset_id.iloc[100]
    assert "row 101 of Dask input partition 0" in str(caught.value)


def test_unreadable_inputs_are_data_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        forecast_distributed(MODEL, tmp_path / "nothing.parquet", scheduler="local")
    text = tmp_path / "test_FD001.txt"
    text.write_text("1 1 0 0 100\n")
    with pytest.raises(DataError, match="Parquet .* or CSV"):
        forecast_distributed(MODEL, text, scheduler="local")


def test_missing_dask_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real_import = builtins.__import__

    def no_dask(name: str, *args, **kwargs):
        if name == "dask" or name.startswith(("dask.", "distributed")):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_dask)
    with pytest.raises(RulError, match=r"needs dask: pip install 'rul\[distributed\]'"):
        forecast_distributed(MODEL, tmp_path / "fleet.parquet", scheduler="local")
