"""A trained checkpoint as a `Predictor`: raw windows -> preprocessing -> network (torch)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from rul.errors import RulError
from rul.predictor import Prediction
from rul.preprocessing import Preprocessing
from training.config import RunConfig
from training.module import RulModule

MODEL_FILE = "model.ckpt"


class CheckpointPredictor:
    """Runs a checkpoint on raw-reading windows with the preprocessing it was trained with."""

    def __init__(self, module: RulModule) -> None:
        self.module = module.eval()
        hp = module.hparams
        self.preprocessing = Preprocessing.from_dict(hp["preprocessing"])
        self.config = RunConfig.from_dict(hp["config"])
        self.features = self.preprocessing.features
        self.window = self.config.data.window
        self.rul_cap = float(self.config.data.rul_cap)
        self.horizon = float(self.config.data.horizon)
        self.quantiles = self.config.model.quantiles

    @property
    def network(self) -> torch.nn.Module:
        return self.module.network

    @torch.no_grad()
    def predict_windows(self, readings: np.ndarray) -> Prediction:
        x = torch.from_numpy(self.preprocessing.transform(readings))
        rul, quantiles, logit = self.network(x)
        return Prediction(rul.numpy().astype(np.float64), quantiles.numpy().astype(np.float64),
                          self.network.failure_probability(logit).numpy().astype(np.float64))


def resolve_checkpoint(path: Path | str) -> Path:
    """A run directory means its model.ckpt; a file is taken as it is."""
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    if not path.is_file():
        raise RulError(f"{path}: no such checkpoint (give a run directory or a .ckpt file)")
    return path


def load_checkpoint(path: Path | str) -> CheckpointPredictor:
    path = resolve_checkpoint(path)
    try:
        module = RulModule.load_from_checkpoint(path, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - torch.load fails in many ways on foreign files
        if isinstance(exc, pickle.UnpicklingError):
            detail = "its contents are not a PyTorch checkpoint"
        else:
            first = str(exc).splitlines()[0][:160] if str(exc) else ""
            detail = f"{type(exc).__name__}{': ' + first if first else ''}"
        raise RulError(f"{path}: not a rul checkpoint ({detail}); give a run directory, the "
                       "model.ckpt that `rul train` wrote, or an exported .onnx") from None
    return CheckpointPredictor(module)
