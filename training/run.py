"""`rul train`: one Lightning run into a self-contained run directory.

RUN_DIR/config.yaml (resolved), model.ckpt (best weights, calibrated), model_card.json,
metrics.json, history.csv, logs/ (Lightning CSV logs), checkpoints/ (last.ckpt, for --resume).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger

from rul.errors import ConfigError
from rul.evaluation import evaluate
from rul.fleet import Fleet
from rul.io import atomic_write, write_json
from rul.model_card import build_model_card, fleet_fingerprint
from rul.split import truncate_assets
from training.calibration import fit_interval_offset, fit_temperature
from training.checkpoint import MODEL_FILE, CheckpointPredictor
from training.config import RunConfig, TrainConfig
from training.datamodule import RulDataModule
from training.module import RulModule

RUN_ENTRIES = ("config.yaml", "model.ckpt", "checkpoints", "logs")
"""What a run directory holds once a run has started in it (besides its other outputs)."""


def train_run(fleet: Fleet, config: RunConfig, out_dir: Path | str, *, name: str = "model",
              resume: bool = False, progress: bool = True) -> Path:
    """Train, select the best epoch on validation engines, calibrate, and write the run dir."""
    with flushed_denormals():
        return _train_run(fleet, config, out_dir, name=name, resume=resume, progress=progress)


def _train_run(fleet: Fleet, config: RunConfig, out_dir: Path | str, *, name: str,
               resume: bool, progress: bool) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t = config.train
    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    pl.seed_everything(t.seed, workers=True, verbose=False)
    datamodule = RulDataModule(fleet, config.data, t.batch_size, t.seed)
    module = RulModule(config.to_dict(), datamodule.preprocessing.n_inputs,
                       datamodule.preprocessing.to_dict())
    last = out_dir / "checkpoints" / "last.ckpt"
    if resume and not last.is_file():
        raise FileNotFoundError(f"{last}: nothing to resume from")
    earlier = [n for n in RUN_ENTRIES if (out_dir / n).exists()]
    if earlier and not resume:
        # A fresh run would mix its epochs and checkpoints with the earlier run's.
        raise ConfigError(f"{out_dir} already holds a run ({', '.join(earlier)}): continue it "
                          "with --resume, or train into another directory")
    trainer = build_trainer(t, out_dir, progress,
                            [EarlyStopping(monitor="val_rmse", mode="min", patience=t.patience)])
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if resume else None)
    if trainer.is_global_zero:
        best = trainer.checkpoint_callback.best_model_path or str(last)
        finish_run(best, datamodule, fleet, config, out_dir, name)
    return out_dir


def build_trainer(t: TrainConfig, out_dir: Path | str, progress: bool,
                  callbacks: list) -> pl.Trainer:
    """The project's Trainer: best and last checkpoints on val_rmse, logs, clipping, precision."""
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


def finish_run(best_checkpoint: str, datamodule: RulDataModule, fleet: Fleet, config: RunConfig,
               out_dir: Path, name: str) -> None:
    """Calibrate the best epoch (failure temperature, interval offset) and write the run's files.

    Both are fitted on the validation windows; the checkpoint Lightning saved has them at their
    neutral values (1 and 0), so what validation_outputs sees is uncalibrated."""
    module = RulModule.load_from_checkpoint(best_checkpoint, map_location="cpu").eval()
    outputs = validation_outputs(module, datamodule)
    module.network.temperature.fill_(fit_temperature(outputs["logit"], outputs["failure"]))
    quantiles = config.model.quantiles
    module.network.interval_offset.fill_(fit_interval_offset(
        outputs["lower"], outputs["upper"], outputs["rul"], quantiles[-1] - quantiles[0]))
    predictor = CheckpointPredictor(module)
    validation = validation_metrics(predictor, datamodule.val_fleet, config.data.seed)
    history = read_history(out_dir / "logs")
    metrics = {"validation": validation, "best_epoch": best_epoch(history)}
    card = build_model_card(name=name, preprocessing=datamodule.preprocessing,
                            config=config.to_dict(), fingerprint=fleet_fingerprint(fleet),
                            calibration={"failure_temperature": float(module.network.temperature),
                                         "interval_offset": float(module.network.interval_offset)},
                            metrics=metrics,
                            libraries=("torch", "pytorch-lightning"))
    config.save(out_dir / "config.yaml")
    save_module(module, out_dir / MODEL_FILE)
    write_json(out_dir / "model_card.json", card)
    write_json(out_dir / "metrics.json", metrics)
    history.to_csv(out_dir / "history.csv", index=False)


@torch.no_grad()
def validation_outputs(module: RulModule, datamodule: RulDataModule) -> dict[str, np.ndarray]:
    """Uncalibrated outer quantiles and failure logits on the validation windows, with targets."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("lower", "upper", "logit", "rul",
                                                          "failure")}
    for x, rul, failure in datamodule.val_dataloader():
        _, quantiles, logit = module.network(x)
        for key, value in (("lower", quantiles[:, 0]), ("upper", quantiles[:, -1]),
                           ("logit", logit), ("rul", rul), ("failure", failure)):
            parts[key].append(value.float().numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}


def validation_metrics(predictor: CheckpointPredictor, val_fleet: Fleet,
                       seed: int) -> dict[str, Any]:
    """The test protocol on validation engines cut at random cycles, as test engines are."""
    truncated, rul_at_end = truncate_assets(val_fleet, seed)
    result = evaluate(predictor, truncated, rul_at_end, trajectories=False)
    keys = ("rmse", "mae", "score", "rmse_uncapped", "f1", "precision", "recall", "auroc",
            "brier", "ece", "coverage", "n_assets")
    return {k: result[k] for k in keys}


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

        chosen.append(TensorBoardLogger(out_dir, name="tensorboard"))
    return chosen
