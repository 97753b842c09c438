"""ONNX export and the torch-free Forecaster: parity on real windows, one file, verification."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest

from export import onnx as export_onnx
from export.onnx import ExportError, export_checkpoint, parity_readings
from rul.errors import DataError, RulError
from rul.evaluation import evaluate
from rul.forecaster import Forecaster, ModelError, sidecar_path
from rul.loaders import load_cmapss
from training.checkpoint import load_checkpoint
from training.config import default_config, merge
from training.run import train_run

QUICK = {"model": {"hidden": 16}, "train": {"max_epochs": 1, "batch_size": 512}}


def _train_and_export(fleet, subset: str, backbone: str, out: Path,
                      members: int = 1) -> tuple[Path, Path]:
    config = merge(merge(default_config(subset, backbone), QUICK), {"model": {"members": members}})
    run = train_run(fleet, config, out / "run", name=subset.lower(), progress=False)
    predictor = load_checkpoint(run)
    readings = parity_readings(fleet, predictor.features, predictor.window)
    export_checkpoint(run, out / "model.onnx", readings)
    return run, out / "model.onnx"


@pytest.fixture(scope="module", params=[("FD001", "cnn", 1), ("FD001", "lstm", 1),
                                        ("FD002", "cnn", 1), ("FD001", "cnn", 3)],
                ids=lambda p: f"{p[0]}-{p[1]}" + (f"-x{p[2]}" if p[2] > 1 else ""))
def real_export(request, cmapss_dir, tmp_path_factory):
    subset, backbone, members = request.param
    data = load_cmapss(cmapss_dir, subset)
    run, model = _train_and_export(data.train, subset, backbone, tmp_path_factory.mktemp("x"),
                                   members)
    return data, run, model


def test_parity_on_real_windows_for_every_backbone(real_export) -> None:
    data, run, model = real_export
    predictor, forecaster = load_checkpoint(run), Forecaster.load(model)
    readings = parity_readings(data.test, predictor.features, predictor.window, seed=1)
    torch_out, onnx_out = predictor.predict_windows(readings), forecaster.predict_windows(readings)
    np.testing.assert_allclose(onnx_out.rul, torch_out.rul, atol=1e-3)
    np.testing.assert_allclose(onnx_out.rul_quantiles, torch_out.rul_quantiles, atol=1e-3)
    np.testing.assert_allclose(onnx_out.failure_probability, torch_out.failure_probability,
                               atol=1e-5)


def test_every_batch_size_gives_the_same_answers(real_export) -> None:
    data, run, model = real_export
    forecaster = Forecaster.load(model)
    readings = parity_readings(data.train, forecaster.features, forecaster.window, n=1024)
    whole = forecaster.predict_windows(readings)
    for size in (1, 7, 1024):
        forecaster.batch_size = size
        part = forecaster.predict_windows(readings[:size])
        np.testing.assert_allclose(part.rul, whole.rul[:size], atol=1e-4)


def test_one_self_contained_file_with_its_card(real_export) -> None:
    data, run, model = real_export
    assert not list(model.parent.glob("*.data")), "weights must live inside the .onnx"
    proto = onnx.load(model)
    onnx.checker.check_model(proto, full_check=True)
    card = json.loads({p.key: p.value for p in proto.metadata_props}["rul.model_card"])
    for key in ("features", "window", "horizon", "rul_cap", "quantiles", "preprocessing"):
        assert key in card
    assert proto.opset_import[0].version >= 17
    sidecar = json.loads(sidecar_path(model).read_text())
    assert sidecar.pop("sha256") and sidecar == card
    if "FD002" in str(card["name"]).upper():
        assert card["preprocessing"]["settings"] == ["setting_1", "setting_2", "setting_3"]


def test_exported_model_scores_like_the_checkpoint(cmapss_dir, real_export) -> None:
    data, run, model = real_export
    if data.test_rul is None:
        pytest.skip("no test labels for this subset")
    from_onnx = evaluate(Forecaster.load(model), data.test, data.test_rul, trajectories=False)
    from_ckpt = evaluate(load_checkpoint(run), data.test, data.test_rul, trajectories=False)
    for key in ("rmse", "mae", "score", "f1", "brier", "coverage"):
        assert from_onnx[key] == pytest.approx(from_ckpt[key], rel=1e-5, abs=1e-3), key


def test_the_cycle_is_read_as_the_engines_age(real_export) -> None:
    """FD001's and FD002's defaults take each reading's cycle as an input: the same sensor
    readings at an older age leave less life."""
    data, run, model = real_export
    forecaster = Forecaster.load(model)
    assert forecaster.features[-1] == "cycle"
    assert forecaster.card["feature_units"]["cycle"]["unit"] == "cycles"
    readings = parity_readings(data.test, forecaster.features, forecaster.window, n=256)
    older = readings.copy()
    older[:, :, -1] += 100
    young, old = forecaster.predict_windows(readings), forecaster.predict_windows(older)
    assert old.rul.mean() < young.rul.mean() - 1


CLIENT = r'''
import json, sys
import numpy as np, onnxruntime as ort
model, readings_path = sys.argv[1], sys.argv[2]
session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
card = json.loads(session.get_modelmeta().custom_metadata_map["rul.model_card"])
rows = np.loadtxt(readings_path, delimiter=",", skiprows=1, dtype=np.float32)
header = open(readings_path).readline().strip().split(",")
rows = rows[:, [header.index(f) for f in card["features"]]]
window = card["window"]
if len(rows) < window:  # pad by repeating the first reading, as the card's contract says
    rows = np.concatenate([np.repeat(rows[:1], window - len(rows), axis=0), rows])
rul, quantiles, probability = session.run(None, {"readings": rows[None, -window:]})
assert not any(name.startswith(("rul.", "training", "export")) for name in sys.modules)
print(json.dumps({"rul": float(rul[0]), "q": quantiles[0].tolist(), "p": float(probability[0])}))
'''


@pytest.mark.parametrize("cycles", [5, 100])
def test_a_numpy_only_client_reproduces_the_forecaster(real_export, tmp_path: Path,
                                                       cycles: int) -> None:
    """A short history (padded) and one longer than the window, of the longest test engine."""
    data, run, model = real_export
    forecaster = Forecaster.load(model)
    longest = data.test.asset_ids[np.argmax(data.test.lengths())]
    asset = data.test.frame[data.test.frame["asset_id"] == longest]
    history = asset.iloc[:cycles]
    history.to_csv(tmp_path / "readings.csv", index=False)
    (tmp_path / "client.py").write_text(CLIENT)
    done = subprocess.run([sys.executable, "-I", str(tmp_path / "client.py"), str(model),
                           str(tmp_path / "readings.csv")], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    client = json.loads(done.stdout)
    pred, padded = forecaster.predict_history(history[forecaster.features].to_numpy())
    assert padded == max(forecaster.window - cycles, 0)
    assert client["rul"] == pytest.approx(pred.rul[0], abs=1e-4)
    assert client["p"] == pytest.approx(pred.failure_probability[0], abs=1e-6)


# --- refusals, on a small simulated model --------------------------------------------------

@pytest.fixture(scope="module")
def sim_model(sim, tmp_path_factory) -> Path:
    return _train_and_export(sim.train, "SIM", "cnn", tmp_path_factory.mktemp("m"))[1]


def _copy(model: Path, folder: Path) -> Path:
    folder.mkdir(exist_ok=True)
    target = folder / model.name
    target.write_bytes(model.read_bytes())
    sidecar_path(target).write_text(sidecar_path(model).read_text())
    return target


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="model file not found"):
        Forecaster.load(tmp_path / "none.onnx")


def test_corrupt_file_is_refused(sim_model: Path, tmp_path: Path) -> None:
    broken = _copy(sim_model, tmp_path)
    broken.write_bytes(broken.read_bytes()[:5000])
    with pytest.raises(ModelError, match="not a readable ONNX model"):
        Forecaster.load(broken)


def test_changed_file_fails_its_hash(sim_model: Path, tmp_path: Path) -> None:
    changed = _copy(sim_model, tmp_path)
    proto = onnx.load(changed)
    proto.doc_string = "tampered"
    changed.write_bytes(proto.SerializeToString())
    with pytest.raises(ModelError, match="sha256 .* does not match"):
        Forecaster.load(changed)


def test_sidecar_card_must_match(sim_model: Path, tmp_path: Path) -> None:
    model = _copy(sim_model, tmp_path)
    sidecar = json.loads(sidecar_path(model).read_text())
    sidecar["window"] = 99
    sidecar_path(model).write_text(json.dumps(sidecar))
    with pytest.raises(ModelError, match=r"card differs .* \['window'\]"):
        Forecaster.load(model)


def test_file_without_card_is_refused(sim_model: Path, tmp_path: Path) -> None:
    proto = onnx.load(sim_model)
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    bare.write_bytes(proto.SerializeToString())
    with pytest.raises(ModelError, match="no model card"):
        Forecaster.load(bare)


def test_wrong_window_shape_is_a_data_error(sim_model: Path) -> None:
    forecaster = Forecaster.load(sim_model)
    with pytest.raises(DataError, match="must have shape"):
        forecaster.predict_windows(np.zeros((2, forecaster.window + 1, len(forecaster.features))))


def test_short_histories_are_padded_and_reported(sim, sim_model: Path) -> None:
    forecaster = Forecaster.load(sim_model)
    frame = sim.test.frame.groupby("asset_id").head(7)  # 7 cycles per asset
    table = forecaster.forecast_fleet(frame)  # a plain DataFrame is validated and accepted
    assert (table["cycles_padded"] == forecaster.window - 7).all()
    assert (table["last_cycle"] == 7).all()
    assert list(table.columns[-5:]) == ["rul_q10", "rul_q50", "rul_q90", "failure_probability",
                                        "cycles_padded"]


def test_bad_dataframe_gets_the_data_layers_error(sim, sim_model: Path) -> None:
    frame = sim.test.frame.copy()
    frame.loc[3, "sensor_2"] = float("nan")
    with pytest.raises(DataError, match="row 4, asset 1, column sensor_2: missing value"):
        Forecaster.load(sim_model).forecast_fleet(frame)


def test_failed_parity_writes_no_file(sim, sim_model: Path, tmp_path: Path, monkeypatch) -> None:
    run = sim_model.parent / "run"
    monkeypatch.setattr(export_onnx, "RUL_TOLERANCE", 0.0)
    readings = parity_readings(sim.train, Forecaster.load(sim_model).features, 30)
    with pytest.raises(ExportError, match="no model file was written"):
        export_checkpoint(run, tmp_path / "m.onnx", readings)
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_sidecar_leaves_no_model_file(sim, sim_model: Path, tmp_path: Path) -> None:
    run = sim_model.parent / "run"
    readings = parity_readings(sim.train, Forecaster.load(sim_model).features, 30)
    sidecar_path(tmp_path / "m.onnx").mkdir()  # a folder where the card would go
    with pytest.raises(RulError, match="it is a folder"):
        export_checkpoint(run, tmp_path / "m.onnx", readings)
    assert sorted(p.name for p in tmp_path.iterdir()) == [sidecar_path(tmp_path / "m.onnx").name]


def test_a_bad_run_card_or_parity_fleet_is_named(sim, sim_model: Path, tmp_path: Path) -> None:
    run = sim_model.parent / "run"
    copy = tmp_path / "run"
    copy.mkdir()
    (copy / "model.ckpt").write_bytes((run / "model.ckpt").read_bytes())
    for text, message in (("{}", "not a rul model card (no window, features)"),
                          ("{oops", "not valid JSON")):
        (copy / "model_card.json").write_text(text)
        with pytest.raises(RulError, match=re.escape(message)):
            export_onnx.read_run_card(copy / "model.ckpt")
    features = Forecaster.load(sim_model).features
    fleet = replace(sim.train, frame=sim.train.frame.drop(columns=[features[-1]]))
    with pytest.raises(RulError, match=f"no column {features[-1]!r}, which the model reads"):
        parity_readings(fleet, features, 30)


def test_recorded_test_metrics_travel_in_both_cards(sim, sim_dir: Path, sim_model: Path,
                                                     tmp_path: Path, capsys) -> None:
    from rul.cli import main

    model = _copy(sim_model, tmp_path)
    before = Forecaster.load(model)
    assert main(["evaluate", "--model", str(model), "--data", str(sim_dir), "--subset", "SIM",
                 "--record", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    after = Forecaster.load(model)  # the hash and both cards agree
    test = after.card["metrics"]["test"]
    assert test["rmse"] == printed["rmse"] and test["f1"] == printed["f1"]
    assert test["subset"] == "SIM" and test["n_assets"] == sim.test.n_assets
    assert test["labels"]["source"].endswith("RUL_SIM.txt")
    assert test["data"]["n_rows"] == len(sim.test.frame)
    # Only the card changed: validation metrics kept, the same numbers from the same graph.
    assert after.card["metrics"]["validation"] == before.card["metrics"]["validation"]
    keys = set(after.card) | set(before.card)
    assert {k for k in keys if after.card.get(k) != before.card.get(k)} == {"metrics"}
    readings = parity_readings(sim.test, before.features, before.window, n=64)
    assert np.array_equal(after.predict_windows(readings).rul,
                          before.predict_windows(readings).rul)
    assert after.version != before.version
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [model.name, sidecar_path(model).name])


def test_a_failed_record_leaves_the_model_and_its_card_as_they_were(
        sim_model: Path, tmp_path: Path, monkeypatch) -> None:
    from export import card as card_module

    model = _copy(sim_model, tmp_path)
    files = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real_replace = os.replace

    def failing_replace(src, dst):  # the model file cannot be moved into place
        if Path(dst) == model:
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(card_module.os, "replace", failing_replace)
    with pytest.raises(RulError, match=f"cannot write {re.escape(str(model))}: No space left"):
        card_module.record_test_metrics(model, {"rmse": 1.0})
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == files
    assert "test" not in Forecaster.load(model).card["metrics"]


def test_record_refuses_what_is_not_a_model_file(sim_model: Path, sim_dir: Path,
                                                 tmp_path: Path, capsys) -> None:
    from rul.cli import main

    run = sim_model.parent / "run"
    assert main(["evaluate", "--model", str(run), "--data", str(sim_dir), "--subset", "SIM",
                 "--record"]) == 2
    assert "give an .onnx file" in capsys.readouterr().err
    tampered = _copy(sim_model, tmp_path)
    sidecar = json.loads(sidecar_path(tampered).read_text())
    sidecar_path(tampered).write_text(json.dumps({**sidecar, "window": 99}))
    from export.card import record_test_metrics

    with pytest.raises(ModelError, match="card differs"):
        record_test_metrics(tampered, {"rmse": 1.0})
    assert json.loads(sidecar_path(tampered).read_text())["window"] == 99  # left as it was


@pytest.mark.parametrize(("quantiles", "offset"), [
    ((0.1, 0.5, 0.9), 0.0), ((0.1, 0.5, 0.9), 3.0), ((0.1, 0.5, 0.9), -0.05),
    ((0.1, 0.5, 0.9), -40.0), ((0.1, 0.9), 2.0), ((0.1, 0.9), -30.0),
    ((0.05, 0.25, 0.5, 0.75, 0.95), -0.5), ((0.5,), 4.0)])
def test_fused_cnn_members_compute_what_the_members_do(quantiles: tuple[float, ...],
                                                       offset: float) -> None:
    import torch

    from export.graph import FusedCNNMembers
    from training.config import ModelConfig
    from training.network import RulNetwork

    torch.manual_seed(0)
    network = RulNetwork(18, 20, 125, ModelConfig(hidden=8, members=4, first_stride=2,
                                                  later_stride=2, quantiles=quantiles)).eval()
    network.interval_offset.fill_(offset)  # large negative ones: the outer two meet the next
    x = torch.randn(5, 20, 18)
    fused = FusedCNNMembers(network)
    with torch.no_grad():
        # The members' mean with its quantiles widened, as RulNetwork.finish has them before
        # clipping.
        rul, quantile, logit = (torch.stack(parts).mean(0) for parts in zip(
            *network.member_outputs(x), strict=True))
        expected = (rul, network.widen(quantile), logit)
        for want, got in zip(expected, fused(x), strict=True):
            assert got.shape == want.shape
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
    # 18 inputs read as 20 channels, the last two by zero weights, the network left as it was.
    assert fused.pad_channels == 2 and fused.backbones[0].convolutions[0].in_channels == 20
    assert network.members[0].backbone.convolutions[0].in_channels == 18
    assert FusedCNNMembers(RulNetwork(15, 20, 125, ModelConfig(hidden=8))
                           ).pad_channels == 0  # under 16 channels: as they are
    # The export takes the fused path for CNN networks, one member or several.
    assert FusedCNNMembers.applies_to(network)
    assert FusedCNNMembers.applies_to(RulNetwork(6, 20, 125, ModelConfig(hidden=8)))
    assert not FusedCNNMembers.applies_to(
        RulNetwork(6, 20, 125, ModelConfig(backbone="lstm", hidden=8, members=2)))
