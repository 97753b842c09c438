"""`rul train`: one Lightning run into a self-contained run directory.

RUN_DIR/config.yaml (resolved), model.ckpt (best weights, calibrated), model_card.json,
metrics.json, history.csv, logs/ (Lightning CSV logs), checkpoints/ (last.ckpt, for --resume).
A cross-fitted run (data.folds = K >= 2) trains its K networks in folds/fold-k/ (logs/,
checkpoints/ each) and writes the same files at the top, model.ckpt holding all K networks.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping, EMAWeightAveraging, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.exceptions import MisconfigurationException

from rul.errors import ConfigError, DataError, RulError, plain
from rul.evaluation import last_window_predictions, score_last_windows
from rul.fleet import Fleet
from rul.io import atomic_write, make_folder, write_json
from rul.loaders import load_extra_training
from rul.model_card import build_model_card, fleet_fingerprint
from rul.predictor import Prediction, Predictor
from rul.split import fold_assets, select_assets, shared_assets, truncate_assets
from rul.targets import check_run_to_failure
from training.calibration import fit_interval_offset, fit_temperature
from training.checkpoint import MODEL_FILE, CheckpointPredictor, load_checkpoint
from training.config import RunConfig, TrainConfig
from training.datamodule import RulDataModule, fold_datamodules
from training.module import RulModule

RUN_ENTRIES = ("config.yaml", "model.ckpt", "checkpoints", "logs", "folds")
"""What a run directory holds once a run has started in it (besides its other outputs)."""
LAST = Path("checkpoints") / "last.ckpt"
TRAINING_DATA = "training_data.json"
"""The fingerprint of the data a run started on (its fleet's and extra fleets'), for --resume."""
FINISHED = "finished.json"
"""A fold's marker once its network has finished training: the best checkpoint's path."""
VALIDATION_CUTS = 10
"""Random cut points per validation engine in the run's validation metrics."""


def train_run(fleet: Fleet, config: RunConfig, out_dir: Path | str, *, name: str = "model",
              resume: bool = False, progress: bool = True,
              data_dir: Path | str | None = None) -> Path:
    """Train, select the best epoch on validation engines, calibrate, and write the run dir.
    `data_dir`: where data.extra_training's C-MAPSS subsets are read (default:
    `default_cmapss_dir()`)."""
    extra = load_extra_training(config.data.extra_training, data_dir)
    for training_fleet in (fleet, *extra):
        check_run_to_failure(training_fleet)
    for extra_fleet in extra:
        # Engines trained on and validated on at once would leak into every validation number.
        shared = shared_assets(fleet, extra_fleet)
        if shared:
            raise DataError(f"{len(shared)} of its assets are assets of the fleet being trained "
                            f"(asset {plain(shared[0][1])} is {fleet.source}'s asset "
                            f"{plain(shared[0][0])}); data.extra_training must name other "
                            "assets, which are never validated on", file=extra_fleet.source)
    with flushed_denormals():
        return _train_run(fleet, extra, config, out_dir, name=name, resume=resume,
                          progress=progress)


def _train_run(fleet: Fleet, extra: list[Fleet], config: RunConfig, out_dir: Path | str, *,
               name: str, resume: bool, progress: bool) -> Path:
    out_dir = Path(out_dir)
    created = not out_dir.exists()
    make_folder(out_dir)
    try:
        return _train_into(fleet, extra, config, out_dir, name=name, resume=resume,
                           progress=progress)
    except BaseException:
        # A run that failed before saving any checkpoint has nothing to resume: leave no
        # folder behind that a second attempt would take for an earlier run.
        if created and not any(out_dir.rglob("*.ckpt")):
            shutil.rmtree(out_dir, ignore_errors=True)
        raise


def _train_into(fleet: Fleet, extra: list[Fleet], config: RunConfig, out_dir: Path, *,
                name: str, resume: bool, progress: bool) -> Path:
    t = config.train
    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    datamodules = fold_datamodules(fleet, config.data, t.batch_size, t.seed, extra)
    dirs = network_dirs(out_dir, len(datamodules))
    if resume and not any((d / LAST).is_file() for d in dirs):
        if (out_dir / LAST).is_file():
            raise ConfigError(f"{out_dir} holds a one-network run; resume it with --folds 1 "
                              f"(this configuration has {len(dirs)} folds)")
        raise FileNotFoundError(f"{out_dir / LAST}: nothing to resume from")
    fingerprint = training_fingerprint(fleet, extra)
    if resume:
        check_same_run(out_dir, dirs, config, datamodules)
        check_same_data(out_dir, fingerprint)
    earlier = [n for n in RUN_ENTRIES if (out_dir / n).exists()]
    if earlier and not resume:
        # A fresh run would mix its epochs and checkpoints with the earlier run's.
        raise ConfigError(f"{out_dir} already holds a run ({', '.join(earlier)}): continue it "
                          "with --resume, or train into another directory")
    if not resume or not (out_dir / TRAINING_DATA).is_file():
        write_json(out_dir / TRAINING_DATA, fingerprint)
    best = [fit_network(dm, config, d, seed=t.seed + k, resume=resume, progress=progress,
                        finished_marker=len(dirs) > 1)
            for k, (dm, d) in enumerate(zip(datamodules, dirs, strict=True))]
    if all(path is not None for path in best):  # rank zero (other DDP ranks get None)
        finish_run(best, datamodules, config, out_dir, name, fingerprint)
    return out_dir


def check_same_run(out_dir: Path, dirs: list[Path], config: RunConfig,
                   datamodules: list[RulDataModule]) -> None:
    """A resumed run must go on training what it started: the same data, model and seed
    (ConfigError naming what differs). Epochs, patience, hardware may change. Each started
    network's checkpoint is read once."""
    started = [(d / LAST, dm) for d, dm in zip(dirs, datamodules, strict=True)
               if (d / LAST).is_file()]
    for k, (last, datamodule) in enumerate(started):
        saved = torch.load(last, map_location="cpu", weights_only=True)["hyper_parameters"]
        if k == 0:
            _check_same_config(out_dir, RunConfig.from_dict(saved["config"]), config)
        # The preprocessing holds statistics of the network's training assets.
        if saved["preprocessing"] != datamodule.preprocessing.to_dict():
            raise ConfigError(f"{out_dir} was started on other training data (its "
                              "preprocessing statistics differ): resume it with the data it "
                              "started on, or train into another directory")


def check_same_data(out_dir: Path, fingerprint: dict[str, Any]) -> None:
    """A resumed run trains on the data it started on, extra fleets included (ConfigError)."""
    path = out_dir / TRAINING_DATA
    if not path.is_file():  # a run started before the file existed
        return
    started = json.loads(path.read_text())
    if _identity(started) != _identity(fingerprint):
        raise ConfigError(f"{out_dir} was started on other training data ({path.name}: "
                          f"{_identity(started)}; now {_identity(fingerprint)}): resume it "
                          "with the data it started on, or train into another directory")


def _identity(fingerprint: dict[str, Any]) -> list[tuple[str, int]]:
    # The data's hash and size, not where it was read from (a run may move).
    return [(f["sha256"], f["n_rows"]) for f in (fingerprint,
                                                 *fingerprint.get("extra_training", []))]


def _check_same_config(out_dir: Path, saved: RunConfig, config: RunConfig) -> None:
    before, now = saved.to_dict(), config.to_dict()
    changed = [f"{section}.{key}: {before[section][key]!r} -> {now[section][key]!r}"
               for section in ("data", "model") for key in now[section]
               if before[section][key] != now[section][key]]
    if before["train"]["seed"] != now["train"]["seed"]:
        changed.append(f"train.seed: {before['train']['seed']!r} -> {now['train']['seed']!r}")
    if changed:
        raise ConfigError(f"{out_dir} was started with another configuration "
                          f"({'; '.join(changed)}): resume it with the settings it started "
                          "with (its folds' checkpoints hold them), or train into another "
                          "directory")


def network_dirs(out_dir: Path, networks: int) -> list[Path]:
    """Where each network of a run trains: the run directory itself, or one folder per fold."""
    if networks == 1:
        return [out_dir]
    return [out_dir / "folds" / f"fold-{k}" for k in range(networks)]


def fit_network(datamodule: RulDataModule, config: RunConfig, run_dir: Path, *, seed: int,
                resume: bool, progress: bool, finished_marker: bool) -> str | None:
    """Train one network into run_dir (checkpoints/, logs/); its best checkpoint's path on rank
    zero, None elsewhere. With `finished_marker` (folds), a network that finished is not
    touched again by a resumed run, which goes on with the first unfinished one."""
    marker = run_dir / FINISHED
    if finished_marker and marker.is_file():
        if rank_zero_only.rank != 0:
            return None
        return str(run_dir / json.loads(marker.read_text())["best_checkpoint"])
    pl.seed_everything(seed, workers=True, verbose=False)
    module = RulModule(config.to_dict(), datamodule.preprocessing.n_inputs,
                       datamodule.preprocessing.to_dict())
    t = config.train
    callbacks = [EarlyStopping(monitor="val_rmse", mode="min", patience=t.patience)]
    if t.ema_decay is not None:
        # Swaps the average in for validation, so early stopping and the best checkpoint
        # judge it; checkpoints hold it as their weights (and the raw ones, to resume).
        callbacks.append(EMAWeightAveraging(decay=t.ema_decay))
    trainer = build_trainer(t, run_dir, progress, callbacks)
    last = run_dir / LAST
    trainer.fit(module, datamodule=datamodule,
                ckpt_path=str(last) if resume and last.is_file() else None)
    if not trainer.is_global_zero:
        return None
    best = Path(trainer.checkpoint_callback.best_model_path or last)
    if finished_marker:
        write_json(marker, {"best_checkpoint": str(best.resolve().relative_to(run_dir.resolve()))})
    return str(best)


def build_trainer(t: TrainConfig, out_dir: Path | str, progress: bool,
                  callbacks: list) -> pl.Trainer:
    """The project's Trainer: best and last checkpoints on val_rmse, logs, clipping, precision.
    ConfigError when Lightning refuses the hardware settings (e.g. a GPU asked for, none here)."""
    try:
        return _trainer(t, out_dir, progress, callbacks)
    except (MisconfigurationException, ValueError, TypeError) as exc:
        raise ConfigError(f"train: Lightning refused accelerator={t.accelerator!r}, "
                          f"devices={t.devices!r}, strategy={t.strategy!r}, "
                          f"precision={t.precision!r}: {exc}") from None


def _trainer(t: TrainConfig, out_dir: Path | str, progress: bool, callbacks: list) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=t.max_epochs,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision=t.precision or default_precision(t.accelerator),
        gradient_clip_val=t.gradient_clip or None,
        deterministic=True,
        logger=loggers(Path(out_dir), t.logger),
        callbacks=[
            ModelCheckpoint(dirpath=Path(out_dir) / "checkpoints", filename="best",
                            monitor="val_rmse", mode="min", save_top_k=1, save_last=True),
            *callbacks,
        ],
        enable_progress_bar=progress,
        enable_model_summary=False,
        log_every_n_steps=10,
    )


def finish_run(best_checkpoints: list[str], datamodules: list[RulDataModule],
               config: RunConfig, out_dir: Path, name: str,
               fingerprint: dict[str, Any]) -> None:
    """Join the networks' best epochs into one model, calibrate it (failure temperature,
    interval offset) and write the run's files.

    Calibration and validation metrics use each validation asset's prediction by the network
    that never trained on it (with folds: every asset's out-of-fold prediction, by one network
    of the ensemble, so they describe one network rather than the ensemble's mean). The
    checkpoints Lightning saved have temperature and offset at their neutral values (1 and 0),
    so what validation_outputs sees is uncalibrated."""
    networks = [RulModule.load_from_checkpoint(p, map_location="cpu").eval()
                for p in best_checkpoints]
    parts = [validation_outputs(m, dm) for m, dm in zip(networks, datamodules, strict=True)]
    outputs = {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}
    temperature = fit_temperature(outputs["logit"], outputs["failure"])
    quantiles = config.model.quantiles
    offset = fit_interval_offset(outputs["lower"], outputs["upper"], outputs["rul"],
                                 quantiles[-1] - quantiles[0])
    module = networks[0] if len(networks) == 1 else join_networks(networks)
    for m in {module, *networks}:
        m.network.temperature.fill_(temperature)
        m.network.interval_offset.fill_(offset)
    validation = validation_metrics(
        [(CheckpointPredictor(m), dm.val_fleet) for m, dm in zip(networks, datamodules,
                                                                  strict=True)],
        config.data.seed)
    histories = [read_history(d / "logs") for d in network_dirs(out_dir, len(networks))]
    metrics = {"validation": validation, "best_epochs": [best_epoch(h) for h in histories]}
    if len(histories) == 1:
        history = histories[0]
        metrics["best_epoch"] = metrics["best_epochs"][0]
    else:
        history = pd.concat([h.assign(fold=k) for k, h in enumerate(histories)])
        history = history[["fold", *histories[0].columns]]
    card = build_model_card(name=name, preprocessing=datamodules[0].preprocessing,
                            config=config.to_dict(),
                            fingerprint=fingerprint,
                            calibration={"failure_temperature": temperature,
                                         "interval_offset": offset},
                            metrics=metrics,
                            libraries=("torch", "pytorch-lightning"))
    config.save(out_dir / "config.yaml")
    save_module(module, out_dir / MODEL_FILE)
    write_json(out_dir / "model_card.json", card)
    write_json(out_dir / "metrics.json", metrics)
    history.to_csv(out_dir / "history.csv", index=False)


def training_fingerprint(fleet: Fleet, extra: list[Fleet] | None = None) -> dict[str, Any]:
    """The card's `training_data`: the fleet's fingerprint, with data.extra_training's."""
    fingerprint = fleet_fingerprint(fleet)
    if extra:
        fingerprint["extra_training"] = [fleet_fingerprint(f) for f in extra]
    return fingerprint


def join_networks(networks: list[RulModule]) -> RulModule:
    """One module whose members are every network's members, in order (the cross-fitted
    ensemble: the mean of the folds' networks)."""
    first = networks[0]
    hp = first.hparams
    joined = RulModule(hp["config"], hp["n_inputs"], hp["preprocessing"],
                       members=sum(len(m.network.members) for m in networks))
    members = [member for m in networks for member in m.network.members]
    for target, source in zip(joined.network.members, members, strict=True):
        target.load_state_dict(source.state_dict())
    return joined.eval()


@torch.no_grad()
def validation_outputs(module: RulModule, datamodule: RulDataModule) -> dict[str, np.ndarray]:
    """Uncalibrated outer quantiles and failure logits on the validation windows, with targets."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("lower", "upper", "logit", "rul",
                                                          "failure")}
    for x, rul, failure in datamodule.val_dataloader():
        # Unclipped: a conformity score against a target at the cap must see how far above
        # the cap an interval lies (clipped, FD001's offset came out exactly 0 and its test
        # interval covered every engine).
        _, quantiles, logit = module.network.combine(module.network.member_outputs(x),
                                                     clip=False)
        for key, value in (("lower", quantiles[:, 0]), ("upper", quantiles[:, -1]),
                           ("logit", logit), ("rul", rul), ("failure", failure)):
            parts[key].append(value.float().numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}


def validation_metrics(parts: list[tuple[CheckpointPredictor, Fleet]], seed: int,
                       cuts: int = VALIDATION_CUTS) -> dict[str, Any]:
    """The test protocol on validation engines cut at random cycles, as test engines are, each
    engine predicted by the network it validated (`parts`: network, validation fleet).

    Every engine is cut `cuts` times at independent points and the metrics pool all cuts:
    one cut of 100 engines gave FD001 RMSEs from 13.7 to 16.2 for the same weights, too noisy
    to choose a configuration by. `score` (a sum over engines) is per set of cuts."""
    predictions, labels = [], []
    for rep in range(cuts):
        for k, (predictor, val_fleet) in enumerate(parts):
            # Each fold and each repetition its own cut points.
            truncated, rul_at_end = truncate_assets(val_fleet, seed + k + len(parts) * rep)
            predictions.append(last_window_predictions(predictor, truncated))
            labels.append(rul_at_end)
    p = parts[0][0]
    result = score_last_windows(Prediction.concatenate(predictions), np.concatenate(labels),
                                p.rul_cap, p.horizon, 0.5, p.quantiles)
    result["score"] /= cuts
    result["score_uncapped"] /= cuts
    keys = ("rmse", "mae", "score", "rmse_uncapped", "f1", "precision", "recall", "auroc",
            "brier", "ece", "coverage")
    return {**{k: result[k] for k in keys},
            "n_assets": sum(val_fleet.n_assets for _, val_fleet in parts),
            "cuts_per_asset": cuts}


HELD_OUT_CUT_SEED = 1000
"""Seed of the cut points the bench scripts share, apart from the seeds runs validate with."""


def held_out_answers(parts: list[tuple[Predictor, Fleet]], train: Fleet,
                     cuts: list[Fleet]) -> np.ndarray:
    """[cuts, engines] RUL answers for the training engines cut at other cycles (`cuts`: the
    training fleet truncated, same engines), each engine answered by the model of `parts`
    (model, the engines it never trained on) that holds it out."""
    ids = train.asset_ids
    answers = np.full((len(cuts), len(ids)), np.nan)
    for model, held_out in parts:
        mine = np.isin(ids, held_out.asset_ids)
        for c, truncated in enumerate(cuts):
            # Only its own engines: both in fleet order, so the answers line up with `mine`.
            own = select_assets(truncated, held_out.asset_ids)
            answers[c, mine] = last_window_predictions(model, own).rul
    return answers


def out_of_fold_predictions(run: Path, train: Fleet, cuts: list[Fleet]) -> np.ndarray:
    """`held_out_answers` of a cross-fitted run: each engine answered by the network that
    never trained on it."""
    config = RunConfig.load(run / "config.yaml")
    if config.data.folds < 2:
        raise RulError(f"{run}: trained with data.folds = {config.data.folds}; out-of-fold "
                       "answers need a cross-fitted run (folds >= 2)")
    folds = fold_assets(train, config.data.folds, config.data.seed)
    parts = []
    for fold, (_, held_out) in zip(network_dirs(run, len(folds)), folds, strict=True):
        best = json.loads((fold / FINISHED).read_text())["best_checkpoint"]
        parts.append((load_checkpoint(fold / best), held_out))
    return held_out_answers(parts, train, cuts)


def read_history(log_dir: Path) -> pd.DataFrame:
    """One row per epoch: epoch, train_loss, val_loss, val_rmse, over every invocation of the
    run (logs/version_N/metrics.csv; where a resumed run repeats an epoch, the later wins)."""
    columns = ["epoch", "train_loss", "val_loss", "val_rmse"]
    parts = []
    for path in sorted(log_dir.glob("version_*/metrics.csv"),
                       key=lambda p: int(p.parent.name.split("_")[1])):
        logged = pd.read_csv(path)
        present = [c for c in columns[1:] if c in logged.columns]
        parts.append(logged.groupby("epoch")[present].mean().reset_index())
    if not parts:
        return pd.DataFrame(columns=columns)
    history = pd.concat(parts).drop_duplicates("epoch", keep="last").sort_values("epoch")
    return history.reindex(columns=columns).reset_index(drop=True)


def best_epoch(history: pd.DataFrame) -> int | None:
    if history["val_rmse"].notna().any():
        return int(history.loc[history["val_rmse"].idxmin(), "epoch"])
    return None


def save_module(module: RulModule, path: Path) -> None:
    """A Lightning-loadable checkpoint of plain values (no pickled classes), written atomically."""
    state = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
             "pytorch-lightning_version": pl.__version__}
    atomic_write(path, lambda f: torch.save(state, f))


@contextmanager
def flushed_denormals() -> Iterator[None]:
    """Denormal floats flushed to zero while training (they can slow CPU LSTM training), then
    the default back: the setting is process-wide and would change other code's arithmetic."""
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def default_precision(accelerator: str) -> str:
    gpu = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return "bf16-mixed" if gpu and torch.cuda.is_bf16_supported() else "32-true"


def loggers(out_dir: Path, kind: str) -> list:
    # A new version folder per invocation: a resumed run appends, never overwrites.
    chosen = [CSVLogger(out_dir, name="logs")]
    if kind == "tensorboard":
        from pytorch_lightning.loggers import TensorBoardLogger

        if not any(importlib.util.find_spec(m) for m in ("tensorboard", "tensorboardX")):
            # Checked here, before training starts: Lightning would fail on its first log.
            raise ConfigError("train.logger is 'tensorboard' but the tensorboard package is not "
                              "installed: pip install 'rul[tensorboard]' (or use --logger csv)")
        chosen.append(TensorBoardLogger(out_dir, name="tensorboard"))
    return chosen
