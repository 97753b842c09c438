"""Batch forecasts (rul.batch) and the maintenance schedule (rul.schedule, rul.schedule_report).

Streaming must give exactly the numbers of loading the whole file, whatever the chunk size;
errors must be the data layer's, located in the whole file. The schedule, its cost and its
files are checked on hand-made tables.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rul import batch
from rul.batch import forecast_file
from rul.errors import ConfigError, DataError
from rul.forecaster import Forecaster, default_model_path
from rul.loaders import FleetColumns, read_fleet
from rul.schedule import (
    lead_time_table,
    read_labels,
    read_schedule,
    run_forecast,
    schedule,
    schedule_cost,
    write_schedule,
    write_schedule_report,
)
from rul.simulate import SimulationConfig, simulate_fleet, write_cmapss

MODEL_PATH = default_model_path()
needs_model = pytest.mark.skipif(not MODEL_PATH.is_file(), reason=f"no model at {MODEL_PATH}")


@pytest.fixture(scope="module")
def model() -> Forecaster:
    if not MODEL_PATH.is_file():
        pytest.skip(f"no model at {MODEL_PATH}")
    return Forecaster.load(MODEL_PATH, threads=1)


@pytest.fixture(scope="module")
def fleet_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One simulated test fleet (some histories shorter than the window) in every format, rows
    interleaved by cycle so that every chunk holds pieces of many assets."""
    out = tmp_path_factory.mktemp("fleet")
    sim = simulate_fleet(SimulationConfig(assets=24, seed=5, test_min_cycles=4))
    interleaved = sim.test.sort_values("cycle", kind="stable").reset_index(drop=True)
    interleaved.to_csv(out / "fleet.csv", index=False)
    interleaved.to_parquet(out / "fleet.parquet", index=False)
    paths = write_cmapss(sim, out, "SIM")
    gz = out / "test_SIM.txt.gz"
    gz.write_bytes(gzip.compress(paths["test"].read_bytes()))
    return {"csv": out / "fleet.csv", "parquet": out / "fleet.parquet", "txt": paths["test"],
            "txt.gz": gz, "rul": paths["rul"]}


# --------------------------------------------------------------------------- streaming


@needs_model
@pytest.mark.parametrize("kind", ["csv", "parquet", "txt", "txt.gz"])
@pytest.mark.parametrize("chunk_rows", [61, 10**6])
def test_streaming_equals_loading_whole(model, fleet_files, kind, chunk_rows):
    path = fleet_files[kind]
    expected = model.forecast_fleet(read_fleet(path))
    assert expected["cycles_padded"].max() > 0  # padded histories are part of the check
    got = forecast_file(model, path, chunk_rows=chunk_rows)
    pd.testing.assert_frame_equal(got, expected, check_exact=True)


@needs_model
def test_assets_split_across_chunks_in_file_order(model, tmp_path):
    # Asset-major order, chunks of 45 rows: most assets start in one chunk and end in another.
    sim = simulate_fleet(SimulationConfig(assets=6, seed=2, test_min_cycles=4))
    path = tmp_path / "grouped.csv"
    sim.test.to_csv(path, index=False)
    expected = model.forecast_fleet(read_fleet(path))
    pd.testing.assert_frame_equal(forecast_file(model, path, chunk_rows=45), expected,
                                  check_exact=True)


@needs_model
def test_renamed_columns_stream_like_read_fleet(model, fleet_files, tmp_path):
    frame = pd.read_csv(fleet_files["csv"]).rename(columns={"asset_id": "unit", "cycle": "t"})
    path = tmp_path / "renamed.csv.gz"
    frame.to_csv(path, index=False)
    columns = FleetColumns(asset_id="unit", cycle="t")
    expected = model.forecast_fleet(read_fleet(path, columns))
    got = forecast_file(model, path, chunk_rows=100, columns=columns)
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    frame.loc[len(frame)] = frame.iloc[0]  # asset 1 at cycle 1 again, chunks later
    frame.to_csv(path, index=False)
    with pytest.raises(DataError) as err:
        forecast_file(model, path, chunk_rows=100, columns=columns)
    assert (err.value.line, err.value.asset, err.value.column) == (len(frame) + 1, 1, "cycle")


@needs_model
def test_text_ids_after_numeric_chunks_are_one_asset(model, tmp_path):
    # The first chunks read their ids as integers, a later one as text: 7 and "7" are one
    # asset, as when the whole file is read (every id becomes text).
    frame = simulate_fleet(SimulationConfig(assets=3, seed=1)).test
    frame = frame.sort_values("cycle", kind="stable").reset_index(drop=True)
    frame["asset_id"] = frame["asset_id"].astype(str)
    frame.loc[len(frame) - 5:, "asset_id"] = "pump-9"
    path = tmp_path / "mixed.csv"
    frame.to_csv(path, index=False)
    expected = model.forecast_fleet(read_fleet(path))
    got = forecast_file(model, path, chunk_rows=50)
    pd.testing.assert_frame_equal(got, expected, check_exact=True, check_dtype=False)
    assert list(got["asset_id"]) == ["1", "2", "3", "pump-9"]


@needs_model
@pytest.mark.parametrize("layout", ["asset order", "an asset comes back", "interleaved"])
def test_pages_and_early_batches_equal_loading_whole(layout, tmp_path, monkeypatch):
    # Pages of 8 assets and model batches of 8: 40 assets cross every page and batch boundary.
    monkeypatch.setattr(batch, "_PAGE_BITS", 3)
    monkeypatch.setattr(batch, "_PAGE", 8)
    used = []
    get = batch._EarlyBatches.get
    monkeypatch.setattr(batch._EarlyBatches, "get",
                        lambda self, k, *a: used.append(k) if get(self, k, *a) else None)
    frame = simulate_fleet(SimulationConfig(assets=40, seed=4, test_min_cycles=4)).test
    if layout == "an asset comes back":  # asset 3's last two rows at the very end
        late = frame.index[frame["asset_id"] == 3][-2:]
        frame = pd.concat([frame.drop(late), frame.loc[late]], ignore_index=True)
    elif layout == "interleaved":
        frame = frame.sort_values("cycle", kind="stable", ignore_index=True)
    path = tmp_path / "fleet.parquet"
    frame.to_parquet(path, index=False)
    model = Forecaster.load(MODEL_PATH, threads=1, batch_size=8)
    expected = model.forecast_fleet(read_fleet(path))
    assert expected["cycles_padded"].max() > 0
    got = forecast_file(model, path, chunk_rows=37)
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    # Early batches are used exactly where their windows are the final ones.
    if layout == "asset order":
        assert used == [0, 1, 2, 3]  # the last batch completes with the file
    elif layout == "an asset comes back":
        assert 0 not in used and used  # asset 3's batch is predicted again
    else:
        assert used == []


def _csv_with_late_row(tmp_path: Path, cycle_offset: int) -> tuple[Path, int]:
    """A fleet CSV whose last row repeats asset 1 at (its last cycle + cycle_offset); returns
    the path and that row's line number (header on line 1)."""
    frame = simulate_fleet(SimulationConfig(assets=4, seed=3)).test
    last = frame[frame["asset_id"] == 1].iloc[[-1]].copy()
    last["cycle"] += cycle_offset
    frame = pd.concat([frame, last], ignore_index=True)
    path = tmp_path / "late.csv"
    frame.to_csv(path, index=False)
    return path, len(frame) + 1


@needs_model
@pytest.mark.parametrize(("offset", "kind"), [(-3, "decreasing"), (0, "duplicate")])
def test_cross_chunk_cycle_that_does_not_increase_is_refused(model, tmp_path, offset, kind):
    path, line = _csv_with_late_row(tmp_path, offset)
    with pytest.raises(DataError) as whole:
        read_fleet(path)
    with pytest.raises(DataError) as streamed:
        forecast_file(model, path, chunk_rows=40)  # asset 1's rows end many chunks earlier
    err = streamed.value
    assert (err.file, err.line, err.asset, err.column) == (str(path), line, 1, "cycle")
    assert (whole.value.line, whole.value.asset) == (line, 1)
    assert f"{kind} cycle" in err.message
    # Within one chunk the data layer's own check speaks, word for word.
    with pytest.raises(DataError) as one_chunk:
        forecast_file(model, path, chunk_rows=10**6)
    assert str(one_chunk.value) == str(whole.value)


@needs_model
@pytest.mark.parametrize("cell", ["abc", "", "inf"])
def test_bad_cell_in_a_later_chunk_is_the_data_layers_error(model, tmp_path, cell):
    frame = simulate_fleet(SimulationConfig(assets=4, seed=3)).test.astype({"sensor_4": object})
    frame.loc[300, "sensor_4"] = cell
    path = tmp_path / "bad.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError) as whole:
        read_fleet(path)
    with pytest.raises(DataError) as streamed:
        forecast_file(model, path, chunk_rows=64)
    assert str(streamed.value) == str(whole.value)
    assert (streamed.value.line, streamed.value.column) == (302, "sensor_4")


@needs_model
def test_bad_files_are_refused_like_read_fleet(model, fleet_files, tmp_path):
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("asset_id,cycle,sensor_2\n1,1,5\n1,2,5,6\n")
    gap = tmp_path / "test_GAP.txt"  # C-MAPSS units must run 1..N
    lines = fleet_files["txt"].read_text().splitlines()
    gap.write_text("\n".join(x for x in lines if not x.startswith("2 ")) + "\n")
    text_unit = tmp_path / "test_TEXT.txt"
    text_unit.write_text("\n".join("x" + x[1:] if x.startswith("2 ") else x for x in lines))
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    header_only = tmp_path / "header.csv"
    header_only.write_text("asset_id,cycle,sensor_2\n")
    unknown, missing = tmp_path / "fleet.xlsx", tmp_path / "missing.csv"
    for path in (ragged, gap, text_unit, empty, header_only, missing, unknown):
        with pytest.raises(DataError) as whole:
            read_fleet(path)
        with pytest.raises(DataError) as streamed:
            forecast_file(model, path, chunk_rows=50)
        assert str(streamed.value) == str(whole.value), path.name


@needs_model
def test_fleet_without_the_models_features_is_refused(model, tmp_path):
    path = tmp_path / "few.csv"
    path.write_text("asset_id,cycle,sensor_2\n1,1,642.0\n")
    with pytest.raises(DataError, match=r"missing columns \['sensor_3'"):
        forecast_file(model, path)
    with pytest.raises(ConfigError):
        forecast_file(model, path, chunk_rows=0)


@needs_model
def test_progress_only_on_a_terminal(model, fleet_files, monkeypatch):
    quiet = io.StringIO()
    monkeypatch.setattr(sys, "stderr", quiet)
    forecast_file(model, fleet_files["csv"], chunk_rows=500, progress=True)
    assert quiet.getvalue() == ""
    terminal = io.StringIO()
    terminal.isatty = lambda: True  # type: ignore[method-assign]
    monkeypatch.setattr(sys, "stderr", terminal)
    forecast_file(model, fleet_files["csv"], chunk_rows=500, progress=True)
    assert "100%" in terminal.getvalue() and terminal.getvalue().endswith("\n")


# --------------------------------------------------------------------------- the schedule


@pytest.fixture
def forecast() -> pd.DataFrame:
    """A hand-made forecast of six assets."""
    return pd.DataFrame({
        "asset_id": [1, 2, 3, 4, 5, 6],
        "last_cycle": [100, 50, 80, 10, 60, 40],
        "rul": [8.0, 45.0, 20.0, 15.0, 40.0, 41.0],
        "rul_q10": [5.7, 30.2, 12.0, 9.9, 30.9, 30.0],
        "rul_q50": [8.0, 45.0, 20.0, 15.0, 40.0, 41.0],
        "rul_q90": [12.0, 60.0, np.nan, 25.0, 55.0, 52.0],
        "failure_probability": [0.9, 0.1, 0.6, 0.5, 0.3, 0.3],
        "cycles_padded": [0, 0, 0, 20, 0, 0],
    })


# True RUL after the last cycle: failure cycles 103, 90, 81, 10, 85, 59.
TRUTH = {1: 3, 2: 40, 3: 1, 4: 0, 5: 25, 6: 19}


def test_schedule_follows_the_rule(forecast):
    table = schedule(forecast, lead_time=10, quantiles=(0.1, 0.5, 0.9))
    # wait = max(0, floor(q10) - 10): 0, 20, 2, 0, 20, 20; ties: probability, then asset_id.
    assert list(table["asset_id"]) == [1, 4, 3, 5, 6, 2]
    assert list(table["risk_rank"]) == [1, 2, 3, 4, 5, 6]
    assert list(table["recommended_cycle"]) == [100, 10, 82, 80, 60, 70]
    assert list(table["at_risk"]) == [True, True, True, False, False, False]  # >= 0.5
    assert list(table.columns) == [*forecast.columns, "recommended_cycle", "at_risk",
                                   "risk_rank"]
    # The lowest quantile column is found without the card, and rescheduling replaces columns.
    again = schedule(table, lead_time=0, threshold=0.95)
    assert list(again["asset_id"]) == [1, 4, 3, 5, 6, 2]
    assert list(again["recommended_cycle"]) == [105, 19, 92, 90, 70, 80]
    assert not again["at_risk"].any() and list(again.columns) == list(table.columns)


def test_schedule_refuses_bad_arguments(forecast):
    for lead_time in (-1, 2.5, True):
        with pytest.raises(ConfigError, match="lead_time"):
            schedule(forecast, lead_time=lead_time)
    with pytest.raises(ConfigError, match="threshold"):
        schedule(forecast, lead_time=1, threshold=1.5)
    with pytest.raises(DataError, match="rul_q10"):
        schedule(forecast.drop(columns="rul_q10"), lead_time=1, quantiles=(0.1,))
    broken = forecast.assign(rul_q10=[5.0, np.nan, 1, 2, 3, 4])
    with pytest.raises(DataError) as err:
        schedule(broken, lead_time=1)
    assert (err.value.asset, err.value.column) == (2, "rul_q10")


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".json"])
@pytest.mark.parametrize("ids", [[1, 2, 3, 4, 5, 6], ["a", "b", "c", "d", "e", "f"],
                                 ["-7", "+A", "=x", "'q", "''", "b"]])  # escaped in CSV
def test_schedule_files_round_trip(forecast, tmp_path, suffix, ids):
    table = schedule(forecast.assign(asset_id=ids), lead_time=10)
    path = write_schedule(table, tmp_path / "out" / f"schedule{suffix}")
    back = read_schedule(path)
    pd.testing.assert_frame_equal(back, table, check_exact=True, check_dtype=False)
    assert back.dtypes.drop("asset_id").equals(table.dtypes.drop("asset_id"))
    if suffix == ".json":
        records = json.loads(path.read_text())
        assert len(records) == 6 and records[0]["asset_id"] == ids[0]
        assert records[2]["rul_q90"] is None  # NaN is written as null
    assert not list(path.parent.glob(".*.tmp"))  # atomic: no temporary left behind


def test_schedule_csv_defuses_spreadsheet_formulas(forecast, tmp_path):
    ids = ['=HYPERLINK("http://x")', "+1", "-2+3", "@SUM(A1)", "pump=7", "\tx"]
    table = schedule(forecast.assign(asset_id=ids), lead_time=10)
    path = write_schedule(table, tmp_path / "schedule.csv")
    with path.open(newline="") as f:
        written = [row["asset_id"] for row in csv.DictReader(f)]
    assert sorted(written) == sorted(["'=HYPERLINK(\"http://x\")", "'+1", "'-2+3", "'@SUM(A1)",
                                      "pump=7", "'\tx"])
    assert sorted(table.asset_id) == sorted(ids)  # the table itself is left as it was


def test_schedule_file_suffix_is_checked(forecast, tmp_path):
    with pytest.raises(ConfigError, match=r"\.csv, \.parquet, \.json"):
        write_schedule(schedule(forecast, lead_time=1), tmp_path / "schedule.xlsx")


# --------------------------------------------------------------------------- cost


def test_schedule_cost_on_a_hand_made_case(forecast):
    table = schedule(forecast, lead_time=10)  # recommended 100, 70, 82, 10, 80, 60 (ids 1-6)
    cost = schedule_cost(table, TRUTH)
    # Failures before maintenance: 3 (81 < 82), 6 (59 < 60). Life given away: 1: 103 - 100,
    # 2: 90 - 70, 4: 10 - 10, 5: 85 - 80.
    assert cost == {"n_assets": 6, "maintained": 4, "unexpected_failures": 2,
                    "unexpected_failure_rate": 2 / 6, "unexploited_lifetime": 28.0,
                    "mean_unexploited_lifetime": 7.0}
    assert schedule_cost(table, pd.Series(TRUTH)) == cost
    assert schedule_cost(table, {**TRUTH, 99: 5}) == cost  # truth of other assets is ignored


def test_schedule_cost_refuses_missing_or_bad_truth(forecast):
    table = schedule(forecast, lead_time=10)
    with pytest.raises(DataError, match="no true RUL for 1 assets"):
        schedule_cost(table, {k: v for k, v in TRUTH.items() if k != 4})
    with pytest.raises(DataError, match="non-negative"):
        schedule_cost(table, {**TRUTH, 2: -1})


def test_lead_time_table_trades_life_for_failures(forecast):
    costs = lead_time_table(forecast, TRUTH, (0, 10, 30))
    assert list(costs["lead_time"]) == [0, 10, 30]
    # lead 0: recommended 105, 80, 92, 19, 90, 70: only asset 2 (90 - 80) is maintained in time.
    assert costs.iloc[0][["unexpected_failures", "unexploited_lifetime"]].tolist() == [5, 10]
    assert costs.iloc[1]["unexpected_failures"] == 2
    assert costs.iloc[2].to_dict()["unexpected_failures"] == 0  # all due now
    assert costs["unexploited_lifetime"].is_monotonic_increasing


def test_labels_from_a_rul_file_or_a_csv(tmp_path):
    rul_file = tmp_path / "RUL_X.txt"
    rul_file.write_text("7\n0\n12\n")
    labels = read_labels(rul_file, [3, 1, 2])
    assert labels.to_dict() == {1: 7, 2: 0, 3: 12}  # the file follows asset order
    csv = tmp_path / "labels.csv"
    csv.write_text("asset_id,rul\n3,12\n1,7\n")
    assert read_labels(csv, [1, 3]).to_dict() == {3: 12, 1: 7}
    csv.write_text("asset_id,rul\n3,12\n1,-7\n")
    with pytest.raises(DataError) as err:
        read_labels(csv, [1, 3])
    assert (err.value.line, err.value.asset) == (3, 1)
    with pytest.raises(DataError, match="3 labels for 4 test assets"):
        read_labels(rul_file, [1, 2, 3, 4])


# --------------------------------------------------------------------------- report


def test_report_is_one_self_contained_page(forecast, tmp_path):
    pytest.importorskip("matplotlib")
    table = schedule(forecast, lead_time=10)
    costs = lead_time_table(forecast, TRUTH)
    out = write_schedule_report(table, tmp_path / "report" / "schedule.html", top_n=3,
                                cost=costs, model_name="<b>fd001</b>", lead_time=10,
                                threshold=0.5)
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count("data:image/png;base64,") == 2
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert "&lt;b&gt;fd001&lt;/b&gt;" in page and "<b>fd001" not in page  # escaped
    ranked = page[page.index("most urgent assets"):page.index("RUL of the most urgent")]
    assert [ranked.find(f"<td>{i}</td>") >= 0 for i in (1, 4, 3, 5)] == [True] * 3 + [False]
    assert "unexpected failures" in page and "lead time, cycles" in page
    single = write_schedule_report(table, tmp_path / "single.html",
                                   cost=schedule_cost(table, TRUTH))
    assert "unexploited lifetime per maintained asset" in single.read_text()


def test_report_shows_asset_ids_verbatim_in_its_chart(forecast, tmp_path):
    pytest.importorskip("matplotlib")
    # matplotlib reads $...$ as math, and fails to draw one such as this.
    ids = ["x$\\foo{$", "$a$", "pump-3", "4", "5", "6"]
    table = schedule(forecast.assign(asset_id=ids), lead_time=10)
    page = write_schedule_report(table, tmp_path / "schedule.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "x$\\foo{$" in page


# --------------------------------------------------------------------------- end to end


@needs_model
@pytest.mark.parametrize("labels", ["rul", "csv"])
def test_run_forecast_end_to_end(model, fleet_files, tmp_path, labels):
    pytest.importorskip("matplotlib")
    fleet = read_fleet(fleet_files["txt"])
    truth = read_labels(fleet_files["rul"], fleet.asset_ids)
    labels_path = fleet_files["rul"]
    if labels == "csv":  # the CSV fleet, with labels as asset_id,rul in any order
        labels_path = tmp_path / "labels.csv"
        truth.rename_axis("asset_id").reset_index()[::-1].to_csv(labels_path, index=False)
    summary = run_forecast(fleet_files["csv"], tmp_path / "schedule.csv", model_path=MODEL_PATH,
                           lead_time=10, report_path=tmp_path / "schedule.html",
                           labels_path=labels_path, chunk_rows=200, progress=False)
    expected = schedule(model.forecast_fleet(read_fleet(fleet_files["csv"])), lead_time=10,
                        quantiles=model.quantiles)
    written = read_schedule(tmp_path / "schedule.csv")
    pd.testing.assert_frame_equal(written, expected, check_exact=True)
    assert summary["assets"] == summary["windows"] == 24 == fleet.n_assets
    assert summary["rows"] == len(fleet.frame)
    assert summary["assets_at_risk"] == int(expected["at_risk"].sum())
    assert summary["cost"] == schedule_cost(expected, truth)
    assert [r["lead_time"] for r in summary["cost_by_lead_time"]] == [0, 5, 10, 20, 30]
    assert summary["seconds"] > 0 and summary["out"] == str(tmp_path / "schedule.csv")
    page = (tmp_path / "schedule.html").read_text()
    assert f"<td>{expected['asset_id'].iloc[0]}</td>" in page


def test_run_forecast_checks_arguments_before_reading(tmp_path):
    missing = tmp_path / "nothing.csv"
    with pytest.raises(ConfigError, match="schedule file"):
        run_forecast(missing, tmp_path / "out.txt")
    with pytest.raises(ConfigError, match="lead_time"):
        run_forecast(missing, tmp_path / "out.csv", lead_time=-1)
    with pytest.raises(ConfigError, match="HTML"):
        run_forecast(missing, tmp_path / "out.csv", report_path=tmp_path / "r.pdf")
    with pytest.raises(DataError, match="file not found"):
        run_forecast(missing, tmp_path / "out.csv", labels_path=tmp_path / "none.txt")
    fleet = tmp_path / "fleet.csv"
    with pytest.raises(ConfigError, match="fleet.csv: that is the input fleet"):
        run_forecast(fleet, fleet)
    with pytest.raises(ConfigError, match="threads must be a positive integer, got 0"):
        run_forecast(missing, tmp_path / "out.csv", threads=0)


def test_batch_forecasts_import_without_torch_or_matplotlib():
    code = ("import sys; sys.modules['torch'] = None; import rul.schedule; "
            "assert 'matplotlib' not in sys.modules; print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_thread_defaults_follow_the_usable_cores(monkeypatch):
    assert batch.default_threads() == max(1, batch.usable_cores() - 1)
    monkeypatch.delattr(batch.os, "sched_getaffinity")  # as on macOS
    monkeypatch.setattr(batch.os, "cpu_count", lambda: 8)
    assert (batch.usable_cores(), batch.default_threads()) == (8, 7)


@needs_model
def test_parquet_with_a_timestamp_and_nullable_cycles(model, tmp_path):
    frame = simulate_fleet(SimulationConfig(assets=3, seed=2)).test
    frame["ts"] = pd.date_range("2026-01-01", periods=len(frame), freq="h")
    path = tmp_path / "ts.parquet"
    frame.to_parquet(path, index=False)
    columns = FleetColumns(timestamp="ts")  # read though the model does not use it
    pd.testing.assert_frame_equal(forecast_file(model, path, chunk_rows=50, columns=columns),
                                  model.forecast_fleet(read_fleet(path, columns)),
                                  check_exact=True)
    # pandas' nullable integers keep their NA through Parquet: the data layer's own error.
    frame = frame.drop(columns="ts").astype({"cycle": "Int64"})
    frame.loc[4, "cycle"] = pd.NA
    frame.to_parquet(path, index=False)
    for read in (read_fleet, lambda p: forecast_file(model, p, chunk_rows=3)):
        with pytest.raises(DataError) as err:
            read(path)
        assert (err.value.row, err.value.column) == (5, "cycle")
        assert "missing value" in err.value.message
