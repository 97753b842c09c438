"""The `rul` command end to end, as a user runs it: real processes, real files."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rul.cli import build_parser, defaults_subset, main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--max-epochs", "3", "--no-progress"]


def rul(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "rul.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=ROOT)


def test_a_fleet_file_trains_with_the_generic_defaults(tmp_path: Path) -> None:
    """FD001's defaults read the cycle as the engine's age, a promise a user's file need not
    keep: a fleet file gets the generic defaults unless --subset names a subset."""
    from training.config import resolve_config

    fleet = tmp_path / "fleet.csv"
    fleet.write_text("asset_id,cycle,s\n1,1,0.5\n")

    def chosen(*extra: str) -> str | None:
        return defaults_subset(build_parser().parse_args(["train", "--out", "r", *extra]))

    assert chosen("--data", str(fleet)) is None
    assert not resolve_config(None).data.cycle_feature
    assert chosen("--data", str(fleet), "--subset", "FD003") == "FD003"
    assert chosen("--data", str(tmp_path)) == "FD001" and chosen() == "FD001"
    assert resolve_config("FD001").data.cycle_feature


def test_bad_file_is_one_clear_line_and_exit_2(tmp_path: Path, capsys) -> None:
    (tmp_path / "train_BAD.txt").write_text("1 1 0 0 100 518.67 oops\n")
    assert main(["inspect", "--data", str(tmp_path), "--subset", "BAD"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "train_BAD.txt" in err and "expected 26 columns" in err


def test_bad_config_value_is_a_clear_error(sim_dir: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "c.yaml").write_text("model:\n  dropout: 2\n")
    code = main(["train", "--data", str(sim_dir), "--subset", "SIM", "--out",
                 str(tmp_path / "run"), "--config", str(tmp_path / "c.yaml")])
    assert code == 2
    assert "model.dropout must be a number in [0, 1), got 2" in capsys.readouterr().err


def test_outputs_that_cannot_be_written_are_one_clear_line(sim_dir: Path, tmp_path: Path,
                                                           capsys) -> None:
    (tmp_path / "afile").write_text("")
    assert main(["simulate", "--out", str(tmp_path / "afile" / "fleet"), "--assets", "3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"cannot create folder {tmp_path / 'afile' / 'fleet'}: " in err
    assert f"{tmp_path / 'afile'} is a file, not a folder" in err
    (tmp_path / "schedule.csv").mkdir()
    assert main(["forecast", "--input", str(sim_dir / "test_SIM.txt"), "--out",
                 str(tmp_path / "schedule.csv"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"cannot write {tmp_path / 'schedule.csv'}: it is a folder" in err
    assert not list((tmp_path / "schedule.csv").iterdir())  # no temporary file left there


def test_simulate_then_inspect(tmp_path: Path) -> None:
    done = rul("simulate", "--out", str(tmp_path), "--assets", "12", "--conditions", "2")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "RUL_SIM.txt").read_text().count("\n") == 12
    shown = rul("inspect", "--data", str(tmp_path), "--subset", "SIM")
    assert shown.returncode == 0, shown.stderr
    assert "12 assets" in shown.stdout and "operating conditions: 2" in shown.stdout


@pytest.mark.slow
def test_train_then_evaluate_json_and_report(sim_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    trained = rul("train", "--data", str(sim_dir), "--subset", "SIM", "--out", str(run), *TINY,
                  "--export")
    assert trained.returncode == 0, trained.stderr
    assert "validation engines" in trained.stdout
    assert "parity on 2048 real windows" in trained.stdout
    scored = rul("evaluate", "--model", str(run), "--data", str(sim_dir), "--subset", "SIM",
                 "--json", "--report", str(tmp_path / "report"))
    assert scored.returncode == 0, scored.stderr
    result = json.loads(scored.stdout)
    for key in ("rmse", "mae", "score", "rmse_uncapped", "precision", "recall", "f1", "auroc",
                "brier", "ece", "coverage", "n_assets"):
        assert key in result, key
    assert result["n_assets"] == 24 and result["rmse"] <= result["rmse_uncapped"] + 1e-9
    assert 0 <= result["f1"] <= 1 and 0 <= result["coverage"] <= 1
    # The same numbers as the function the command wraps.
    from rul.evaluation import evaluate
    from rul.loaders import load_cmapss
    from training.checkpoint import load_checkpoint

    data = load_cmapss(sim_dir, "SIM")
    direct = evaluate(load_checkpoint(run), data.test, data.test_rul)
    assert result["rmse"] == pytest.approx(direct["rmse"], rel=1e-6)
    # The default run is cross-fitted: its training curves come from history.csv's folds.
    assert (tmp_path / "report" / "training_curves.png").is_file()
    shipped = rul("evaluate", "--model", str(run / "model.onnx"), "--data", str(sim_dir),
                  "--subset", "SIM", "--json")
    assert shipped.returncode == 0, shipped.stderr
    assert json.loads(shipped.stdout)["rmse"] == pytest.approx(result["rmse"], abs=1e-3)
    checkpoint = rul("evaluate", "--model", str(run / "model.ckpt"), "--data", str(sim_dir),
                     "--subset", "SIM", "--json")
    assert checkpoint.returncode == 0, checkpoint.stderr
    assert json.loads(checkpoint.stdout)["rmse"] == pytest.approx(result["rmse"], rel=1e-6)

    # Labels from elsewhere: a data directory without its RUL file needs --labels.
    unlabelled = tmp_path / "unlabelled"
    unlabelled.mkdir()
    for name in ("train_SIM.txt", "test_SIM.txt"):
        shutil.copy(sim_dir / name, unlabelled / name)
    labels = tmp_path / "elsewhere" / "labels.txt"
    labels.parent.mkdir()
    shutil.copy(sim_dir / "RUL_SIM.txt", labels)
    missing = rul("evaluate", "--model", str(run), "--data", str(unlabelled), "--subset", "SIM")
    assert missing.returncode == 2 and "give --labels RUL_SIM.txt" in missing.stderr
    labelled = rul("evaluate", "--model", str(run), "--data", str(unlabelled), "--subset", "SIM",
                   "--labels", str(labels), "--json")
    assert labelled.returncode == 0, labelled.stderr
    assert json.loads(labelled.stdout)["rmse"] == pytest.approx(result["rmse"], rel=1e-6)


def test_evaluate_reads_fd001_when_no_subset_is_given(cmapss_dir: Path, capsys) -> None:
    assert main(["evaluate", "--model", str(ROOT / "checkpoints" / "cmapss-fd001.onnx"),
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["subset"] == "FD001" and result["n_assets"] == 100
    # The shipped card's recorded test metrics are what this evaluation measures now.
    from rul.forecaster import Forecaster, file_sha256

    recorded = Forecaster.load(ROOT / "checkpoints" / "cmapss-fd001.onnx").card["metrics"]["test"]
    for key in ("rmse", "score", "f1", "coverage", "prognostic_horizon"):
        assert recorded[key] == pytest.approx(result[key], rel=1e-6), key
    assert recorded["labels"]["sha256"] == file_sha256(cmapss_dir / "RUL_FD001.txt")


def test_export_refuses_a_missing_run(tmp_path: Path, capsys) -> None:
    assert main(["export", "--checkpoint", str(tmp_path / "nothing"), "--out",
                 str(tmp_path / "m.onnx")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err


@pytest.mark.slow
def test_resume_after_the_process_was_killed(sim_dir: Path, tmp_path: Path) -> None:
    """Killed while training the second fold of the default cross-fitted run, resumed: the
    finished fold is kept as it was, the second continues from its last.ckpt."""
    run = tmp_path / "run"
    args = ["train", "--data", str(sim_dir), "--subset", "SIM", "--out", str(run),
            "--max-epochs", "40", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "rul.cli", *args], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run / "folds" / "fold-1" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    while not last.is_file() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert last.is_file(), "no checkpoint of the second fold was written before the kill"
    assert not (run / "model.ckpt").exists()
    finished = (run / "folds" / "fold-0" / "finished.json").read_text()
    resumed = rul(*args[:-3], "--max-epochs", "3", "--no-progress", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert (run / "model.ckpt").is_file()
    assert (run / "folds" / "fold-0" / "finished.json").read_text() == finished
    assert [p.name for p in (run / "folds" / "fold-0" / "logs").iterdir()] == ["version_0"]
    assert len(list((run / "folds" / "fold-1" / "logs").iterdir())) == 2


@pytest.mark.slow
def test_two_process_cpu_ddp(sim_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    done = rul("train", "--data", str(sim_dir), "--subset", "SIM", "--out", str(run),
               "--max-epochs", "2", "--no-progress", "--accelerator", "cpu", "--devices", "2",
               "--strategy", "ddp")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "distributed_backend=gloo" in done.stderr and "All distributed processes" in done.stderr
    assert (run / "model.ckpt").is_file()


def test_forecast_with_the_shipped_model(sim_dir: Path, tmp_path: Path) -> None:
    """`rul forecast` with no model named uses checkpoints/cmapss-fd001.onnx."""
    done = rul("forecast", "--input", str(sim_dir / "test_SIM.txt"), "--out",
               str(tmp_path / "schedule.json"), "--report", str(tmp_path / "schedule.html"),
               "--evaluate", str(sim_dir / "RUL_SIM.txt"), "--json", "--no-progress")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["model"] == "fd001" and summary["assets"] == 24
    assert [row["lead_time"] for row in summary["cost_by_lead_time"]][:2] == [0, 5]
    records = json.loads((tmp_path / "schedule.json").read_text())
    assert [r["risk_rank"] for r in records] == list(range(1, 25))
    assert (tmp_path / "schedule.html").stat().st_size > 1000


@pytest.mark.slow
def test_forecast_on_a_local_dask_cluster_equals_one_process(sim, tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    parts = tmp_path / "fleet"
    parts.mkdir()
    frame = sim.test.frame
    for i, ids in enumerate(np.array_split(sim.test.asset_ids, 3)):
        frame[frame["asset_id"].isin(ids)].to_parquet(parts / f"part-{i}.parquet", index=False)
    frame.to_parquet(tmp_path / "whole.parquet", index=False)
    local = rul("forecast", "--input", str(tmp_path / "whole.parquet"), "--out",
                str(tmp_path / "one.csv"), "--no-progress")
    dask = rul("forecast", "--input", str(parts), "--out", str(tmp_path / "dask.csv"),
               "--scheduler", "local", "--no-progress")
    assert local.returncode == 0, local.stderr
    assert dask.returncode == 0, dask.stderr
    assert (tmp_path / "one.csv").read_text() == (tmp_path / "dask.csv").read_text()


def test_train_from_a_csv_fleet_file(sim, tmp_path: Path, capsys) -> None:
    fleet = tmp_path / "fleet.csv"
    sim.train.frame.to_csv(fleet, index=False)
    (tmp_path / "small.yaml").write_text("data:\n  folds: 1\nmodel:\n  hidden: 16\n")
    run = tmp_path / "run"
    assert main(["train", "--data", str(fleet), "--out", str(run), "--max-epochs", "2",
                 "--config", str(tmp_path / "small.yaml"), "--no-progress"]) == 0
    card = json.loads((run / "model_card.json").read_text())
    assert card["training_data"]["n_assets"] == sim.train.n_assets
    assert card["features"] == [c for c in card["features"] if c in sim.train.frame.columns]
    assert (run / "model.ckpt").is_file() and "validation engines" in capsys.readouterr().out


def test_train_names_the_extra_training_fleets_it_adds(sim, tmp_path: Path, capsys) -> None:
    fleet, extra = tmp_path / "fleet.csv", tmp_path / "sibling.csv"
    sim.train.frame.to_csv(fleet, index=False)
    frame = sim.train.frame  # half the engines, whole (each run to its failure), other ids
    frame[frame.asset_id <= frame.asset_id.max() // 2].assign(
        asset_id=lambda f: f.asset_id + 1000, sensor_2=lambda f: f.sensor_2 + 0.5
    ).to_csv(extra, index=False)
    (tmp_path / "c.yaml").write_text(f"data:\n  folds: 1\n  extra_training: ['{extra}']\n"
                                     "model:\n  hidden: 16\n")
    run = tmp_path / "run"
    assert main(["train", "--data", str(fleet), "--out", str(run), "--max-epochs", "1",
                 "--config", str(tmp_path / "c.yaml"), "--no-progress"]) == 0
    assert f"training also on {extra} (data.extra_training" in capsys.readouterr().err
    card = json.loads((run / "model_card.json").read_text())
    assert [f["source"] for f in card["training_data"]["extra_training"]] == [str(extra)]
    (tmp_path / "c.yaml").write_text("data:\n  extra_training: [missing.csv]\n")
    assert main(["train", "--data", str(fleet), "--out", str(tmp_path / "other"),
                 "--config", str(tmp_path / "c.yaml")]) == 2
    err = capsys.readouterr().err
    assert "data.extra_training names 'missing.csv', read as a fleet file" in err
    assert "file not found" in err and not (tmp_path / "other").exists()
