"""Training: heads' losses, calibration, real short runs on tiny fleets, resume, evaluation."""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from rul.errors import ConfigError, DataError, RulError
from rul.evaluation import evaluate
from rul.loaders import load_extra_training
from rul.metrics import rmse
from rul.schema import ASSET_ID
from rul.simulate import SimulationConfig, simulate_fleet, write_cmapss
from rul.split import join_fleets, shared_assets
from rul.targets import capped, rul_per_row
from training.calibration import fit_interval_offset, fit_temperature
from training.checkpoint import load_checkpoint
from training.config import (
    ModelConfig,
    RunConfig,
    TrainConfig,
    default_config,
    merge,
    resolve_config,
)
from training.datamodule import fold_datamodules
from training.module import build_optimizer, multitask_loss, pinball_loss, step_schedule
from training.network import RulNetwork
from training.run import train_run

# One network (folds 1) unless a test is about the cross-fitted ensemble.
TINY = {"data": {"folds": 1}, "model": {"hidden": 16, "layers": 1},
        "train": {"max_epochs": 6, "batch_size": 128, "patience": 6}}


def tiny_config(backbone: str = "cnn", **train) -> RunConfig:
    config = merge(default_config("SIM", backbone), TINY)
    return merge(config, {"train": train}) if train else config


@pytest.fixture(scope="session")
def tiny_run(sim, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    return train_run(sim.train, tiny_config(), out, name="sim", progress=False)


def test_pinball_loss_by_hand() -> None:
    levels = torch.tensor([0.1, 0.9])
    quantiles = torch.tensor([[10.0, 10.0]])
    # target 12: under-prediction by 2 costs 0.1*2 at q=0.1 and 0.9*2 at q=0.9
    assert pinball_loss(quantiles, torch.tensor([12.0]), levels).item() == pytest.approx(1.0)
    # target 8: over-prediction by 2 costs 0.9*2 and 0.1*2
    assert pinball_loss(quantiles, torch.tensor([8.0]), levels).item() == pytest.approx(1.0)
    assert pinball_loss(quantiles, torch.tensor([10.0]), levels).item() == 0.0


def test_multitask_loss_by_hand() -> None:
    outputs = (torch.tensor([100.0]), torch.tensor([[100.0, 100.0]]), torch.tensor([0.0]))
    losses = multitask_loss(outputs, torch.tensor([50.0]), torch.tensor([1.0]),
                            torch.tensor([0.1, 0.9]), rul_cap=100.0, quantile_weight=0.5,
                            failure_weight=0.2)
    assert losses["rul_loss"].item() == pytest.approx(0.25)  # (1.0 - 0.5)^2
    assert losses["quantile_loss"].item() == pytest.approx((0.9 * 0.5 + 0.1 * 0.5) / 2)
    assert losses["failure_loss"].item() == pytest.approx(math.log(2))
    expected = 0.25 + 0.5 * 0.25 + 0.2 * math.log(2)
    assert losses["loss"].item() == pytest.approx(expected)


def test_quantiles_never_cross() -> None:
    torch.manual_seed(0)
    net = RulNetwork(5, 12, 125, ModelConfig(hidden=8, quantiles=(0.1, 0.5, 0.9)))
    _, quantiles, _ = net(torch.randn(64, 12, 5) * 10)
    assert (quantiles.diff(dim=1) >= 0).all()


@pytest.mark.parametrize("true_temperature", [0.5, 3.0])
def test_temperature_scaling_recovers_a_known_temperature(true_temperature: float) -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, 20_000)
    labels = rng.random(20_000) < 1 / (1 + np.exp(-logits / true_temperature))
    assert fit_temperature(logits, labels) == pytest.approx(true_temperature, rel=0.05)
    assert fit_temperature(logits, np.ones_like(labels)) == 1.0


def test_conformal_offset_reaches_the_asked_coverage() -> None:
    rng = np.random.default_rng(1)
    target = rng.normal(0, 10, 5_000)
    lower, upper = np.full(5_000, -5.0), np.full(5_000, 5.0)  # far too narrow for sd 10
    offset = fit_interval_offset(lower, upper, target, 0.8)
    covered = ((lower - offset <= target) & (target <= upper + offset)).mean()
    assert offset > 0 and covered == pytest.approx(0.8, abs=0.01)
    # Too wide an interval is narrowed.
    assert fit_interval_offset(lower * 10, upper * 10, target, 0.8) < 0
    # By hand: scores max(l - y, y - u) = [-1, 2, 0] -> the higher 100 % quantile is 2.
    assert fit_interval_offset([0, 0, 0], [2, 2, 2], [1, 4, 2], 0.9) == 2.0


def test_predictions_are_never_negative_at_inference() -> None:
    torch.manual_seed(0)
    net = RulNetwork(5, 12, 125, ModelConfig(hidden=8)).eval()
    net.interval_offset.fill_(500.0)
    rul, quantiles, _ = net(torch.randn(64, 12, 5) * 10)
    assert (rul >= 0).all() and (quantiles >= 0).all() and (quantiles[:, 0] == 0).all()


def test_widened_quantiles_stay_ordered() -> None:
    net = RulNetwork(3, 8, 125, ModelConfig(hidden=4))
    quantiles = torch.tensor([[10.0, 20.0, 30.0]])
    net.interval_offset.fill_(5.0)
    assert net.widen(quantiles).tolist() == [[5.0, 20.0, 35.0]]
    net.interval_offset.fill_(-50.0)
    assert net.widen(quantiles).tolist() == [[20.0, 20.0, 20.0]]


def test_answers_are_clipped_to_the_target_range_at_inference_only() -> None:
    torch.manual_seed(0)
    net = RulNetwork(5, 12, 125, ModelConfig(hidden=8))
    x = torch.randn(4, 12, 5)
    for bias, inside in ((3.0, 125.0), (-3.0, 0.0)):  # far above the cap, far below zero
        net.members[0].rul_head.bias.data.fill_(bias)
        net.members[0].quantile_head.bias.data.fill_(bias)
        rul, quantiles, _ = net.train()(x)
        assert ((rul > 125) if bias > 0 else (rul < 0)).all()  # training keeps gradients
        rul, quantiles, _ = net.eval()(x)
        assert (rul == inside).all() and (quantiles[:, 0] == inside).all()
        assert ((quantiles >= 0) & (quantiles <= 125)).all()
        # Calibration sees the unclipped answer.
        raw_rul, raw_quantiles, _ = net.combine(net.member_outputs(x), clip=False)
        assert torch.equal(raw_rul.clamp(0, 125), rul) and not (raw_rul == inside).any()
        assert torch.equal(raw_quantiles.clamp(0, 125), quantiles)


@pytest.mark.parametrize("window", [20, 21])
@pytest.mark.parametrize("later_stride", [1, 2])
def test_strided_convolutions_read_the_window_at_lower_resolution(window: int,
                                                                  later_stride: int) -> None:
    from training.backbones import CNNBackbone

    torch.manual_seed(0)
    backbone = CNNBackbone(6, window, ModelConfig(hidden=8, first_stride=2,
                                                  later_stride=later_stride)).eval()
    first, second = (m for m in backbone.convolutions if isinstance(m, torch.nn.Conv1d))
    assert first.stride == (2,) and second.stride == (later_stride,)
    steps = (window + 1) // 2  # kernel 5, padding 2: centred on every other cycle
    steps = (steps + 1) // 2 if later_stride == 2 else steps
    assert backbone.dense[1].in_features == 8 * steps
    x = torch.randn(4, window, 6)
    # The exported path (1xK Conv2d) against plain Conv1d on [B, F, W].
    h = x.transpose(1, 2)
    for layer in backbone.convolutions:
        h = layer(h)
    assert h.shape == (4, 8, steps)
    with torch.no_grad():
        torch.testing.assert_close(backbone(x), backbone.dense(h))
    with pytest.raises(ValueError, match="model.first_stride must be a positive integer"):
        ModelConfig(first_stride=0)
    with pytest.raises(ValueError, match="model.later_stride must be a positive integer"):
        ModelConfig(later_stride=0)


def test_members_are_averaged_into_one_answer() -> None:
    torch.manual_seed(0)
    net = RulNetwork(5, 12, 125, ModelConfig(hidden=8, members=3)).eval()
    net.interval_offset.fill_(2.0)
    x = torch.randn(16, 12, 5)
    rul, quantiles, logit = net(x)
    members = net.member_outputs(x)
    assert len(members) == 3 and not torch.equal(members[0][0], members[1][0])
    assert torch.allclose(rul, torch.stack([m[0] for m in members]).mean(0).clamp(0, 125))
    assert torch.allclose(logit, torch.stack([m[2] for m in members]).mean(0))
    mean_quantiles = net.widen(torch.stack([m[1] for m in members]).mean(0)).clamp(0, 125)
    assert torch.allclose(quantiles, mean_quantiles)
    assert (quantiles.diff(dim=1) >= 0).all()
    with pytest.raises(ValueError, match="model.members must be a positive integer"):
        ModelConfig(members=0)


def test_an_ensemble_run_learns(sim, tmp_path: Path) -> None:
    config = merge(tiny_config(max_epochs=3), {"model": {"members": 2}})
    run = train_run(sim.train, config, tmp_path, progress=False)
    predictor = load_checkpoint(run)
    assert len(predictor.network.members) == 2
    result = evaluate(predictor, sim.test, sim.test_rul, trajectories=False)
    mean = capped(rul_per_row(sim.train), 125).mean()
    assert result["rmse"] < rmse(capped(sim.test_rul, 125), np.full(len(sim.test_rul), mean))


@pytest.fixture(scope="session")
def folds_run(sim, tmp_path_factory) -> Path:
    config = merge(tiny_config(max_epochs=3), {"data": {"folds": 3}})
    return train_run(sim.train, config, tmp_path_factory.mktemp("folds"), progress=False)


def test_a_cross_fitted_run_joins_its_folds_into_one_model(sim, folds_run: Path) -> None:
    predictor = load_checkpoint(folds_run)
    assert len(predictor.network.members) == 3  # one network per fold
    history = (folds_run / "history.csv").read_text().splitlines()
    assert history[0].startswith("fold,epoch,") and {line[0] for line in history[1:]} == set("012")
    metrics = json.loads((folds_run / "metrics.json").read_text())
    # Validation is out of fold: every training asset, each by the network that never saw it.
    assert metrics["validation"]["n_assets"] == sim.train.n_assets
    assert len(metrics["best_epochs"]) == 3 and "best_epoch" not in metrics
    for k in range(3):
        fold = json.loads((folds_run / "folds" / f"fold-{k}" / "finished.json").read_text())
        assert (folds_run / "folds" / f"fold-{k}" / fold["best_checkpoint"]).is_file()
    result = evaluate(predictor, sim.test, sim.test_rul, trajectories=False)
    mean = capped(rul_per_row(sim.train), 125).mean()
    assert result["rmse"] < rmse(capped(sim.test_rul, 125), np.full(len(sim.test_rul), mean))


def test_a_cross_fitted_model_is_the_mean_of_its_folds(sim, folds_run: Path) -> None:
    from training.module import RulModule

    predictor = load_checkpoint(folds_run)
    joined, shape = predictor.network, (4, predictor.window, predictor.preprocessing.n_inputs)
    x = torch.from_numpy(np.random.default_rng(0).normal(size=shape).astype(np.float32))
    per_fold = []
    for k in range(3):
        fold_dir = folds_run / "folds" / f"fold-{k}"
        best = json.loads((fold_dir / "finished.json").read_text())["best_checkpoint"]
        network = RulModule.load_from_checkpoint(fold_dir / best).network.eval()
        with torch.no_grad():
            per_fold.append(network.member_outputs(x)[0][0])
    with torch.no_grad():
        rul = joined(x)[0]
    torch.testing.assert_close(rul, torch.stack(per_fold).mean(0).clamp(0.0, predictor.rul_cap))


def test_out_of_fold_answers_come_from_the_network_that_never_saw_the_engine(
        sim, folds_run: Path, tiny_run: Path) -> None:
    from rul.evaluation import last_window_predictions
    from rul.split import fold_assets, truncate_assets
    from training.run import out_of_fold_predictions

    cuts = [truncate_assets(sim.train, seed) for seed in (7, 8)]
    answers = out_of_fold_predictions(folds_run, sim.train, [cut for cut, _ in cuts])
    assert answers.shape == (2, sim.train.n_assets) and np.isfinite(answers).all()
    ids = sim.train.asset_ids
    folds = fold_assets(sim.train, 3, tiny_config().data.seed)
    for k, (_, held_out) in enumerate(folds):
        fold_dir = folds_run / "folds" / f"fold-{k}"
        best = json.loads((fold_dir / "finished.json").read_text())["best_checkpoint"]
        own = last_window_predictions(load_checkpoint(fold_dir / best), cuts[1][0]).rul
        mine = np.isin(ids, held_out.asset_ids)
        np.testing.assert_allclose(answers[1, mine], own[mine], rtol=1e-6)
        assert not np.allclose(answers[1, ~mine], own[~mine])  # others answer the rest
    with pytest.raises(RulError, match="need a cross-fitted run"):
        out_of_fold_predictions(tiny_run, sim.train, [cuts[0][0]])


def test_a_cross_fitted_run_resumes_with_the_unfinished_fold(sim, tmp_path: Path) -> None:
    config = merge(tiny_config(max_epochs=2), {"data": {"folds": 2}})
    train_run(sim.train, config, tmp_path, progress=False)
    # As if killed during fold 1: its network unfinished, nothing joined yet.
    (tmp_path / "folds" / "fold-1" / "finished.json").unlink()
    for name in ("model.ckpt", "metrics.json", "model_card.json"):
        (tmp_path / name).unlink()
    train_run(sim.train, merge(config, {"train": {"max_epochs": 3}}), tmp_path, resume=True,
              progress=False)
    logs = {k: sorted(p.name for p in (tmp_path / "folds" / f"fold-{k}" / "logs").iterdir())
            for k in (0, 1)}
    assert logs == {0: ["version_0"], 1: ["version_0", "version_1"]}  # fold 0 left alone
    epochs = [line.split(",")[:2] for line in
              (tmp_path / "history.csv").read_text().splitlines()[1:]]
    assert epochs == [["0", "0"], ["0", "1"], ["1", "0"], ["1", "1"], ["1", "2"]]
    assert len(load_checkpoint(tmp_path).network.members) == 2


def test_resuming_a_one_network_run_with_folds_says_how(sim, tmp_path: Path) -> None:
    config = tiny_config(max_epochs=1)
    train_run(sim.train, config, tmp_path, progress=False)
    with pytest.raises(ValueError, match="one-network run; resume it with --folds 1"):
        train_run(sim.train, merge(config, {"data": {"folds": 2}}), tmp_path, resume=True,
                  progress=False)


def test_a_checkpoint_from_before_ensembles_still_loads(sim, tiny_run: Path,
                                                        tmp_path: Path) -> None:
    # Before ensembles the one member's weights sat at the network's top level.
    checkpoint = torch.load(tiny_run / "model.ckpt", weights_only=True)
    checkpoint["state_dict"] = {k.replace("network.members.0.", "network."): v
                                for k, v in checkpoint["state_dict"].items()}
    assert any(k.startswith("network.backbone.") for k in checkpoint["state_dict"])
    torch.save(checkpoint, tmp_path / "old.ckpt")
    windows = np.repeat(sim.test.frame[load_checkpoint(tiny_run).features].to_numpy()[None, :30],
                        2, axis=0)
    old, new = load_checkpoint(tmp_path / "old.ckpt"), load_checkpoint(tiny_run)
    np.testing.assert_array_equal(old.predict_windows(windows).rul,
                                  new.predict_windows(windows).rul)


def test_config_errors_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown backbone 'gru'.*cnn"):
        ModelConfig(backbone="gru")
    (tmp_path / "c.yaml").write_text("train:\n  max_epoch: 3\n")
    with pytest.raises(ValueError, match=r"c.yaml: train: unknown keys \['max_epoch'\]"):
        RunConfig.load(tmp_path / "c.yaml")
    (tmp_path / "bad.yaml").write_text("train:\n  max_epochs: [1\n")
    with pytest.raises(ValueError, match=r"bad.yaml: not valid YAML \(line 3, column 1: "):
        RunConfig.load(tmp_path / "bad.yaml")
    (tmp_path / "bin.yaml").write_bytes(b"\x80\x81\xfe")
    with pytest.raises(ValueError, match="bin.yaml: not a text file"):
        RunConfig.load(tmp_path / "bin.yaml")
    with pytest.raises(ValueError, match="is a folder; --config takes a YAML file"):
        RunConfig.load(tmp_path)


def test_learning_rate_schedules() -> None:
    def rates(schedule: str, val_rmse: list[float]) -> list[float]:
        config = TrainConfig(learning_rate=1e-2, lr_schedule=schedule, max_epochs=10, patience=6)
        optimizer, scheduler = build_optimizer(torch.nn.Linear(2, 1).parameters(), config)
        seen = []
        for value in val_rmse:
            step_schedule(scheduler, value)
            seen.append(optimizer.param_groups[0]["lr"])
        return seen

    # Plateau (patience 6 // 3 = 2): halved on the third epoch without a better RMSE.
    assert rates("plateau", [5.0, 4.0, 4.0, 4.0, 4.0]) == [1e-2] * 4 + [5e-3]
    # Cosine ignores the RMSE: half-way at epoch 5 of 10, 1 % of the start at the end.
    cosine = rates("cosine", [5.0] * 10)
    assert cosine[4] == pytest.approx(1e-4 + (1e-2 - 1e-4) / 2)
    assert cosine[-1] == pytest.approx(1e-4)
    with pytest.raises(ValueError, match=r"train.lr_schedule must be one of \['plateau', "
                                         r"'cosine'\], got 'step'"):
        TrainConfig(lr_schedule="step")


@pytest.mark.parametrize(("config", "message"), [
    (lambda: ModelConfig(hidden=True), "model.hidden must be a positive integer, got True"),
    (lambda: ModelConfig(quantiles=["a"]), "model.quantiles must be a list of numbers"),
    (lambda: ModelConfig(dropout="x"), "model.dropout must be a number in"),
    (lambda: TrainConfig(learning_rate=float("nan")), "train.learning_rate must be a finite"),
    (lambda: TrainConfig(seed=-1), "train.seed must be an integer >= 0, got -1"),
    (lambda: TrainConfig(accelerator="quantum"), "train.accelerator must be one of"),
    (lambda: TrainConfig(devices="abc"), "train.devices must be 'auto'"),
    (lambda: TrainConfig(devices=0), "train.devices must be 'auto'"),
    (lambda: TrainConfig(precision="fp8"), "train.precision must be null or one of"),
    (lambda: TrainConfig(num_threads=-3), "train.num_threads must be a positive integer"),
    (lambda: TrainConfig(ema_decay=1.0), "train.ema_decay must be null or a number in (0, 1)"),
    (lambda: TrainConfig(ema_decay="0.9"), "train.ema_decay must be null or a number in (0, 1)"),
])
def test_config_values_are_checked_with_the_field_named(config, message) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        config()
    for devices in ("auto", 2, -1, "0,1", "1"):
        TrainConfig(devices=devices)  # what Lightning takes


def test_a_run_that_fails_before_any_checkpoint_leaves_no_folder(sim, tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(ValueError):
        train_run(sim.train, merge(tiny_config(), {"data": {"folds": 10_000}}), out,
                  progress=False)
    assert not out.exists()
    out.mkdir()  # a folder the user made stays
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train_run(sim.train, tiny_config(), out, resume=True, progress=False)
    assert out.is_dir()


def test_a_one_row_asset_in_training_data_is_refused(sim, tmp_path: Path) -> None:
    frame = sim.train.frame
    first = frame[frame[ASSET_ID] == frame[ASSET_ID].iloc[0]].head(1).assign(
        **{ASSET_ID: frame[ASSET_ID].max() + 1})
    fleet = replace(sim.train, frame=pd.concat([frame, first], ignore_index=True))
    with pytest.raises(DataError, match=r"asset \d+: only one row; training data are "
                                        "run-to-failure records"):
        train_run(fleet, tiny_config(), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_asking_for_a_gpu_where_there_is_none_is_a_config_error(sim, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Lightning refused accelerator='gpu'"):
        train_run(sim.train, tiny_config(accelerator="gpu"), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_a_file_that_is_not_a_checkpoint_is_named(tiny_run: Path, tmp_path: Path) -> None:
    (tmp_path / "labels.txt").write_text("12\n7\n")
    (tmp_path / "cut.ckpt").write_bytes((tiny_run / "model.ckpt").read_bytes()[:5000])
    for path in (tmp_path / "labels.txt", tmp_path / "cut.ckpt"):
        with pytest.raises(RulError, match=f"{re.escape(str(path))}: not a rul checkpoint"):
            load_checkpoint(path)


def test_config_layers_defaults_file_and_flags(tmp_path: Path) -> None:
    # A file that sets one field keeps every default it does not name (the subset's window,
    # the backbone's members); its backbone picks that backbone's defaults; flags win.
    (tmp_path / "epochs.yaml").write_text("train:\n  max_epochs: 3\n")
    config = resolve_config("FD002", config_file=tmp_path / "epochs.yaml")
    assert (config.train.max_epochs, config.data.window, config.data.folds,
            config.model.hidden) == (3, 90, 5, 32)
    (tmp_path / "lstm.yaml").write_text("model:\n  backbone: lstm\n")
    config = resolve_config("FD001", config_file=tmp_path / "lstm.yaml",
                            overrides={"data": {"window": 25}})
    assert (config.model.backbone, config.data.folds, config.model.hidden,
            config.data.window) == ("lstm", 1, 64, 25)
    assert resolve_config("FD001", backbone="cnn",
                          config_file=tmp_path / "lstm.yaml").model.backbone == "cnn"
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ValueError, match="list.yaml: a config file is a mapping"):
        resolve_config("FD001", config_file=tmp_path / "list.yaml")


def test_short_run_learns_and_beats_the_mean(sim, tiny_run: Path) -> None:
    history = (tiny_run / "history.csv").read_text().splitlines()
    losses = [float(line.split(",")[1]) for line in history[1:]]
    assert losses[-1] < 0.7 * losses[0]
    predictor = load_checkpoint(tiny_run)
    result = evaluate(predictor, sim.test, sim.test_rul, trajectories=False)
    mean = capped(rul_per_row(sim.train), 125).mean()
    baseline = rmse(capped(sim.test_rul, 125), np.full(len(sim.test_rul), mean))
    assert result["rmse"] < 0.8 * baseline


def test_training_leaves_subnormal_arithmetic_alone(tiny_run: Path) -> None:
    """Flushing denormals is for the run only: the setting is process-wide."""
    smallest = np.array([5e-324, 1e-310])
    assert (smallest * 1.0 > 0).all()


def test_run_directory_is_self_contained(tiny_run: Path) -> None:
    for name in ("config.yaml", "model.ckpt", "model_card.json", "metrics.json", "history.csv"):
        assert (tiny_run / name).is_file(), name
    card = json.loads((tiny_run / "model_card.json").read_text())
    assert card["window"] == 30 and card["rul_cap"] == 125 and card["horizon"] == 30
    assert card["quantiles"] == [0.1, 0.5, 0.9] and card["backbone"] == "cnn"
    assert card["features"] == card["preprocessing"]["features"]
    assert card["training_data"]["n_assets"] == 24
    assert card["calibration"]["failure_temperature"] > 0
    assert RunConfig.load(tiny_run / "config.yaml") == tiny_config()
    # The checkpoint holds plain values only: it loads with weights_only.
    torch.load(tiny_run / "model.ckpt", weights_only=True)


def test_lstm_backbone_trains(sim, tmp_path: Path) -> None:
    run = train_run(sim.train, tiny_config("lstm", max_epochs=2), tmp_path, progress=False)
    predictor = load_checkpoint(run)
    assert predictor.config.model.backbone == "lstm"
    pred = predictor.predict_windows(np.repeat(
        sim.test.frame[predictor.features].to_numpy()[None, :30], 3, axis=0))
    assert pred.rul.shape == (3,) and pred.rul_quantiles.shape == (3, 3)
    assert ((pred.failure_probability >= 0) & (pred.failure_probability <= 1)).all()


def test_resume_continues_from_last_epoch(sim, tmp_path: Path) -> None:
    train_run(sim.train, tiny_config(max_epochs=2), tmp_path, progress=False)
    train_run(sim.train, tiny_config(max_epochs=4), tmp_path, resume=True, progress=False)
    epochs = [line.split(",")[0] for line in
              (tmp_path / "history.csv").read_text().splitlines()[1:]]
    assert epochs == ["0", "1", "2", "3"]
    # A fresh run into the same directory would mix its epochs with these: refused.
    with pytest.raises(ValueError, match="already holds a run.*--resume"):
        train_run(sim.train, tiny_config(max_epochs=1), tmp_path, progress=False)
    assert (tmp_path / "history.csv").read_text().count("\n") == 5  # untouched


def test_a_moving_average_of_the_weights_is_what_a_run_validates_and_keeps(
        sim, tmp_path: Path) -> None:
    train_run(sim.train, tiny_config(max_epochs=2, ema_decay=0.9), tmp_path, progress=False)
    best = torch.load(tmp_path / "checkpoints" / "best.ckpt", weights_only=True)
    averaged, raw = best["state_dict"], best["current_model_state"]
    name = next(k for k in averaged if k.endswith("weight"))
    assert not torch.equal(averaged[name], raw[name])
    # The run's model is the average, not the weights the optimiser reached.
    model = load_checkpoint(tmp_path).module.state_dict()
    assert torch.equal(model[name], averaged[name])
    # A resumed run picks the average up where it was.
    steps = best["averaging_state"]["n_averaged"].item()
    train_run(sim.train, tiny_config(max_epochs=3, ema_decay=0.9), tmp_path, resume=True,
              progress=False)
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["averaging_state"]["n_averaged"].item() > steps
    epochs = [line.split(",")[0] for line in
              (tmp_path / "history.csv").read_text().splitlines()[1:]]
    assert epochs == ["0", "1", "2"]


def test_resume_refuses_a_changed_data_model_or_seed(sim, tmp_path: Path) -> None:
    config = merge(tiny_config(max_epochs=1), {"data": {"folds": 2}})
    train_run(sim.train, config, tmp_path, progress=False)
    (tmp_path / "folds" / "fold-1" / "finished.json").unlink()  # as if killed in fold 1
    for change, named in (({"data": {"window": 20}}, "data.window: 30 -> 20"),
                          ({"model": {"hidden": 8}}, "model.hidden: 16 -> 8"),
                          ({"train": {"seed": 5}}, "train.seed: 0 -> 5")):
        with pytest.raises(ValueError, match=f"another configuration \\({named}"):
            train_run(sim.train, merge(config, change), tmp_path, resume=True, progress=False)
    # More epochs (or other hardware) is what resuming is for.
    train_run(sim.train, merge(config, {"train": {"max_epochs": 2}}), tmp_path, resume=True,
              progress=False)


def test_resume_refuses_other_training_data(sim, tmp_path: Path) -> None:
    train_run(sim.train, tiny_config(max_epochs=1), tmp_path, progress=False)
    first = sim.train.asset_ids[0]
    other = replace(sim.train, frame=sim.train.frame[sim.train.frame["asset_id"] != first]
                    .reset_index(drop=True))
    with pytest.raises(ValueError, match="was started on other training data"):
        train_run(other, tiny_config(max_epochs=2), tmp_path, resume=True, progress=False)
    train_run(sim.train, tiny_config(max_epochs=2), tmp_path, resume=True, progress=False)


def test_resume_without_a_run_is_an_error(sim, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train_run(sim.train, tiny_config(), tmp_path, resume=True, progress=False)


def test_padded_windows_add_each_young_assets_windows_to_training(sim) -> None:
    config = default_config("SIM").data
    full, padded = (fold_datamodules(sim.train, replace(config, padded_windows=flag), 64, 0)[0]
                    for flag in (False, True))
    lengths = full.train_fleet.lengths()
    # Every cycle of every training asset ends a window; before, the first window - 1 did not.
    assert len(padded.train_set) == lengths.sum()
    assert len(full.train_set) == (lengths - config.window + 1).sum()
    x, rul, _ = padded.train_set[0]  # the first cycle alone, repeated
    assert torch.equal(x, x[:1].expand_as(x)) and rul == min(lengths[0] - 1, config.rul_cap)
    assert len(padded.val_set) == len(full.val_set)  # validation is unchanged


def test_validation_can_start_later_in_each_life(sim) -> None:
    config = default_config("SIM").data
    every, later = (fold_datamodules(sim.train, replace(config, validation_from=share), 64, 0)[0]
                    for share in (0.0, 0.25))
    lengths = every.val_fleet.lengths()
    seen = np.concatenate([np.arange(1, n + 1) for n in lengths])
    life = np.repeat(lengths, lengths)
    kept = seen >= 0.25 * life
    assert len(every.val_set) == lengths.sum() and len(later.val_set) == kept.sum()
    # The same windows and targets as before, only the early ones left out.
    torch.testing.assert_close(later.val_set.rul, every.val_set.rul[torch.from_numpy(kept)])
    x_later, _, _ = later.val_set.__getitems__(list(range(len(later.val_set))))
    x_every, _, _ = every.val_set.__getitems__(np.flatnonzero(kept).tolist())
    assert torch.equal(x_later, x_every)
    assert len(later.train_set) == len(every.train_set)  # training is unchanged
    # By hand: an 8-cycle asset keeps the windows ending at cycles 2..8 (2 / 8 = 0.25).
    from training.datamodule import build_dataset

    eight = replace(sim.train, frame=sim.train.frame.groupby(ASSET_ID).head(8)
                    .reset_index(drop=True))
    ends = build_dataset(eight, every.preprocessing, config, "every", from_life_fraction=0.25)
    per_asset = 8 - 1
    assert len(ends) == per_asset * eight.n_assets
    first = build_dataset(eight, every.preprocessing, config, "every")
    assert torch.equal(ends.rul[:per_asset], first.rul[1:8])
    with pytest.raises(ValueError, match=r"validation_from must be a number in \[0, 1\), got 1.0"):
        replace(config, validation_from=1.0)


def test_loaders_fetch_whole_batches_equal_to_windows_cut_one_by_one(sim) -> None:
    module = fold_datamodules(sim.train, default_config("SIM").data, 64, 0)[0]
    order = torch.randperm(len(module.train_set), generator=torch.Generator().manual_seed(0))
    order = order[:64].tolist()
    x, rul, failure = module.train_set.__getitems__(order)
    one_by_one = [module.train_set[i] for i in order]
    assert torch.equal(x, torch.stack([w for w, _, _ in one_by_one]))
    assert torch.equal(rul, torch.stack([r for _, r, _ in one_by_one]))
    assert torch.equal(failure, torch.stack([f for _, _, f in one_by_one]))
    # The loaders hand those batches on as they are: every training window once an epoch
    # (less the last partial batch), every validation window once.
    batches = list(module.train_dataloader())
    assert {b[0].shape for b in batches} == {(64, module.config.window,
                                              module.preprocessing.n_inputs)}
    assert len(batches) == len(module.train_set) // 64
    assert sum(len(b[0]) for b in module.val_dataloader()) == len(module.val_set)


def test_tensorboard_logging_needs_its_package(tmp_path: Path) -> None:
    import importlib.util

    from training.run import loggers

    installed = any(importlib.util.find_spec(m) for m in ("tensorboard", "tensorboardX"))
    if installed:
        assert len(loggers(tmp_path, "tensorboard")) == 2
    else:
        with pytest.raises(ConfigError, match=r"pip install 'rul\[tensorboard\]'"):
            loggers(tmp_path, "tensorboard")
    assert len(loggers(tmp_path, "csv")) == 1


def test_a_seed_gives_the_same_run_twice(sim, tmp_path: Path) -> None:
    """Deterministic seeds: the same seed trains the same weights and metrics; another does not."""
    def run(seed: int, name: str) -> tuple[dict, dict]:
        config = merge(tiny_config(max_epochs=2, seed=seed), {"data": {"seed": seed}})
        out = train_run(sim.train, config, tmp_path / name, progress=False)
        state = torch.load(out / "model.ckpt", weights_only=True)["state_dict"]
        return state, json.loads((out / "metrics.json").read_text())

    first, first_metrics = run(0, "a")
    again, again_metrics = run(0, "b")
    other, _ = run(1, "c")
    assert first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert first_metrics == again_metrics
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_extra_training_fleets_join_every_networks_training_and_never_validation(
        sim, sim_dir: Path) -> None:
    extra = sim_dir / "extra.csv"
    # Another fleet with the same columns and the same asset ids 1..n (ids must not collide).
    sibling = sim.train.frame.assign(sensor_2=sim.train.frame["sensor_2"] + 0.5)
    sibling.to_csv(extra, index=False)
    config = replace(default_config("SIM").data, folds=3, extra_training=[str(extra)])
    plain = fold_datamodules(sim.train, replace(config, extra_training=()), 64, 0)
    joined = fold_datamodules(sim.train, config, 64, 0,
                              load_extra_training(config.extra_training))
    total = sim.train.n_assets
    for before, after in zip(plain, joined, strict=True):
        assert after.train_fleet.n_assets == before.train_fleet.n_assets + total
        assert after.val_fleet.frame.equals(before.val_fleet.frame)  # validation unchanged
        assert len(after.val_set) == len(before.val_set)
        lengths = sim.train.lengths()  # the extra fleet's, too
        added = lengths.sum() if config.padded_windows else (lengths - config.window + 1).sum()
        assert len(after.train_set) == len(before.train_set) + added
        # The fold's own training assets, then the extra fleet, row for row.
        train = after.train_fleet.frame
        own = len(before.train_fleet.frame)
        assert np.array_equal(train["sensor_2"].to_numpy()[own:], sibling["sensor_2"].to_numpy())
        assert np.array_equal(train["sensor_2"].to_numpy()[:own],
                              before.train_fleet.frame["sensor_2"].to_numpy())
        assert shared_assets(after.val_fleet, after.train_fleet) == []
    # The inputs and their normalisation come from the fleet's own assets alone.
    assert joined[0].preprocessing.to_dict() == plain[0].preprocessing.to_dict()
    with pytest.raises(ConfigError, match="load them with rul.loaders.load_extra_training"):
        fold_datamodules(sim.train, config, 64, 0)  # named, but not given


@pytest.fixture(scope="session")
def sibling_dir(tmp_path_factory) -> Path:
    """Another simulated fleet (subset SIB), other engines with the same columns as SIM's."""
    out = tmp_path_factory.mktemp("sibling")
    write_cmapss(simulate_fleet(SimulationConfig(assets=10, seed=11)), out, "SIB")
    return out


def test_a_run_with_extra_training_records_it_and_validates_on_its_own_fleet(
        sim, sim_dir: Path, sibling_dir: Path, tmp_path: Path) -> None:
    config = merge(tiny_config(max_epochs=2), {"data": {"folds": 2, "extra_training": ["SIB"]}})
    run = train_run(sim.train, config, tmp_path / "run", progress=False, data_dir=sibling_dir)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["validation"]["n_assets"] == sim.train.n_assets  # not the extra engines
    card = json.loads((run / "model_card.json").read_text())
    assert card["config"]["data"]["extra_training"] == ["SIB"]
    fingerprint = card["training_data"]
    assert fingerprint["n_assets"] == sim.train.n_assets
    assert [f["n_assets"] for f in fingerprint["extra_training"]] == [10]
    assert RunConfig.load(run / "config.yaml").data.extra_training == ("SIB",)
    # Resuming with other extra engines under the same name is refused.
    other = tmp_path / "other-sib"
    write_cmapss(simulate_fleet(SimulationConfig(assets=10, seed=12)), other, "SIB")
    with pytest.raises(ConfigError, match="was started on other training data"):
        train_run(sim.train, merge(config, {"train": {"max_epochs": 3}}), run, resume=True,
                  progress=False, data_dir=other)
    with pytest.raises(DataError, match=r"data.extra_training names 'FD009', read as a C-MAPSS "
                                        r"subset .*no train_FD009"):
        train_run(sim.train, merge(config, {"data": {"extra_training": ["FD009"]}}),
                  tmp_path / "none", progress=False, data_dir=sim_dir)
    # The fleet itself as its own extra: its validation engines would be trained on.
    with pytest.raises(DataError, match="24 of its assets are assets of the fleet being trained"):
        train_run(sim.train, merge(config, {"data": {"extra_training": ["SIM"]}}),
                  tmp_path / "none", progress=False, data_dir=sim_dir)
    # A fleet that cannot join fails inside the run folder, which is then removed.
    fewer = tmp_path / "fewer.csv"
    sim.train.frame.drop(columns=["sensor_2"]).assign(asset_id=lambda f: f.asset_id + 100
                                                      ).to_csv(fewer, index=False)
    with pytest.raises(DataError, match="columns differ"):
        train_run(sim.train, merge(config, {"data": {"extra_training": [str(fewer)]}}),
                  tmp_path / "none", progress=False)
    assert not (tmp_path / "none").exists()


def test_extra_training_is_checked() -> None:
    from rul.config import DataConfig

    assert DataConfig(extra_training=["FD002"]).extra_training == ("FD002",)
    assert DataConfig(extra_training=["FD002"]).to_dict()["extra_training"] == ["FD002"]
    with pytest.raises(ConfigError, match="extra_training must be a list of C-MAPSS subset"):
        DataConfig(extra_training="FD002")
    with pytest.raises(ConfigError, match="extra_training must be a list"):
        DataConfig(extra_training=["FD002", ""])
    with pytest.raises(ConfigError, match="extra_training names a fleet twice"):
        DataConfig(extra_training=["FD002", "FD002"])


def test_fleets_joined_for_training_get_their_own_asset_ids(sim) -> None:
    named = replace(sim.train, frame=sim.train.frame.assign(asset_id=lambda f: "e" + f.asset_id
                                                            .astype(str).str.zfill(3)))
    reordered = replace(sim.train, sensors=sim.train.sensors[::-1])  # same columns, other order
    joined = join_fleets([sim.train, named, reordered])
    n = sim.train.n_assets
    assert list(joined.asset_ids) == list(range(3 * n))
    assert joined.lengths().tolist() == sim.train.lengths().tolist() * 3
    assert list(joined.frame.columns[2:]) == [*sim.train.settings, *sim.train.sensors]
    values = joined.frame[list(sim.train.sensors)].to_numpy()
    assert np.array_equal(values[2 * len(sim.train.frame):], values[:len(sim.train.frame)])
    other = replace(sim.train, sensors=sim.train.sensors[:-1], source="other.csv")
    with pytest.raises(DataError, match="other.csv.*columns differ"):
        join_fleets([sim.train, other])
