"""The torch-free Forecaster: one ONNX model file, verified, run by onnxruntime.

Everything that serves or forecasts goes through it. A model file `MODEL.onnx` carries its
card in the metadata (key `rul.model_card`); the sidecar `MODEL.json` holds the same card plus
the file's sha256. Loading refuses a missing or corrupt file, a card that is missing or lacks
a required field, and a sidecar whose hash or card does not match the file.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rul.errors import DataError, RulError
from rul.fleet import Fleet
from rul.loaders import fleet_from_dataframe, require_features
from rul.model_card import CARD_KEY
from rul.predictor import Prediction
from rul.schema import ASSET_ID, CYCLE
from rul.windowing import make_windows

MODEL_ENV = "RUL_MODEL"
"""Environment variable naming the model file that `rul serve` and `rul forecast` use."""
INPUT = "readings"
OUTPUTS = ("rul", "rul_quantiles", "failure_probability")
REQUIRED_CARD_KEYS = ("schema_version", "features", "window", "horizon", "rul_cap", "quantiles")


class ModelError(RulError):
    """A model file that cannot be used: missing, corrupt, or not matching its card."""


def default_model_path(env: Mapping[str, str] | None = None) -> Path:
    """$RUL_MODEL (of `env`, default os.environ), else the shipped FD001 model
    (checkpoints/cmapss-fd001.onnx)."""
    value = (os.environ if env is None else env).get(MODEL_ENV, "").strip()
    if value:
        return Path(value).expanduser()
    return Path(__file__).resolve().parents[1] / "checkpoints" / "cmapss-fd001.onnx"


def sidecar_path(model_path: Path | str) -> Path:
    """MODEL.json beside MODEL.onnx."""
    return Path(model_path).with_suffix(".json")


def file_sha256(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Forecaster:
    """An ONNX model and its card; `predict_*` methods take raw readings in card order."""

    path: Path
    card: dict[str, Any]
    session: Any = field(repr=False)
    batch_size: int = 4096
    threads: int | None = None
    """onnxruntime's intra-op threads per run (None: its default, every core)."""

    @classmethod
    def load(cls, path: Path | str, *, threads: int | None = None,
             batch_size: int = 4096) -> Forecaster:
        """Open and verify a model file; `threads` sets onnxruntime's intra-op threads."""
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise ModelError(f"{path}: model file not found")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types for unreadable files
            raise ModelError(f"{path}: not a readable ONNX model ({_first_line(exc)})") from None
        card = _embedded_card(session, path)
        _check_sidecar(path, card)
        _check_signature(session, card, path)
        return cls(path, card, session, batch_size, threads or None)

    @property
    def features(self) -> list[str]:
        return list(self.card["features"])

    @property
    def window(self) -> int:
        return int(self.card["window"])

    @property
    def rul_cap(self) -> float:
        return float(self.card["rul_cap"])

    @property
    def horizon(self) -> float:
        return float(self.card["horizon"])

    @property
    def quantiles(self) -> tuple[float, ...]:
        return tuple(self.card["quantiles"])

    @property
    def name(self) -> str:
        return str(self.card.get("name", self.path.stem))

    @cached_property
    def version(self) -> str:
        """A short, stable identity of this exact model: the card's creation time and hash."""
        digest = hashlib.sha256(json.dumps(self.card, sort_keys=True).encode()).hexdigest()
        return f"{self.card.get('created', 'unknown')}-{digest[:12]}"

    def predict_windows(self, readings: np.ndarray) -> Prediction:
        """[batch, window, n_features] raw readings -> predictions, in batches."""
        readings = np.asarray(readings, dtype=np.float32)
        expected = (self.window, len(self.features))
        if readings.ndim != 3 or readings.shape[1:] != expected:
            raise DataError(f"readings must have shape [batch, {expected[0]}, {expected[1]}] "
                            f"(window, features {self.features}); got {list(readings.shape)}")
        parts = []
        for start in range(0, len(readings), self.batch_size):
            rul, quantiles, probability = self.session.run(
                list(OUTPUTS), {INPUT: readings[start:start + self.batch_size]})
            parts.append(Prediction(rul.astype(np.float64), quantiles.astype(np.float64),
                                    probability.astype(np.float64)))
        if not parts:
            raise DataError("no readings to predict from")
        # One batch (every single-asset request) needs no copy into a new array.
        return parts[0] if len(parts) == 1 else Prediction.concatenate(parts)

    def predict_history(self, readings: np.ndarray) -> tuple[Prediction, int]:
        """One asset's readings [cycles, n_features], oldest first -> (prediction at the last
        cycle, cycles padded). Histories shorter than the window repeat their first reading."""
        readings = np.asarray(readings, dtype=np.float32)
        if readings.ndim != 2 or readings.shape[1] != len(self.features) or len(readings) == 0:
            raise DataError(f"readings must be [cycles >= 1, {len(self.features)}] in the order "
                            f"{self.features}; got {list(readings.shape)}")
        windows = make_windows(readings, np.array([len(readings)]), self.window, ends="last")
        return self.predict_windows(windows.array()), int(windows.padded[0])

    def forecast_fleet(self, fleet: Fleet | pd.DataFrame) -> pd.DataFrame:
        """One row per asset, predicted at its last cycle: asset_id, last_cycle, rul,
        rul_q<level>..., failure_probability, cycles_padded. A DataFrame in long format
        (asset_id, cycle, the card's features) is validated first, like any input."""
        if isinstance(fleet, pd.DataFrame):
            fleet = fleet_from_dataframe(fleet)
        require_features(fleet.frame.columns, self.features, fleet.source)
        raw = fleet.frame[self.features].to_numpy(dtype=np.float32)
        windows = make_windows(raw, fleet.lengths(), self.window, ends="last")
        return self.forecast_table(fleet.asset_ids, fleet.frame[CYCLE].to_numpy()[windows.end_rows],
                                   self.predict_windows(windows.array()), windows.padded)

    def forecast_table(self, asset_ids: np.ndarray, last_cycle: np.ndarray, pred: Prediction,
                       cycles_padded: np.ndarray) -> pd.DataFrame:
        """The per-asset forecast table (the columns of `forecast_fleet`) from predictions."""
        result = pd.DataFrame({ASSET_ID: asset_ids, "last_cycle": last_cycle, "rul": pred.rul})
        for i, level in enumerate(self.quantiles):
            result[quantile_column(level)] = pred.rul_quantiles[:, i]
        result["failure_probability"] = pred.failure_probability
        result["cycles_padded"] = cycles_padded
        return result


def quantile_column(level: float) -> str:
    """Column name of a quantile level: 0.1 -> rul_q10, 0.025 -> rul_q2.5."""
    return f"rul_q{level * 100:g}"


def _embedded_card(session: Any, path: Path) -> dict[str, Any]:
    text = session.get_modelmeta().custom_metadata_map.get(CARD_KEY)
    if text is None:
        raise ModelError(f"{path}: no model card in the file (metadata key {CARD_KEY!r}); "
                         f"export it with `rul export`")
    try:
        card = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}: the embedded model card is not valid JSON ({exc})") from None
    missing = [k for k in REQUIRED_CARD_KEYS if k not in card]
    if missing:
        raise ModelError(f"{path}: the model card lacks {missing}")
    return card


def _check_sidecar(path: Path, card: dict[str, Any]) -> None:
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        return  # the file alone is a complete model; the sidecar adds a hash to check
    try:
        beside = json.loads(sidecar.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{sidecar}: not valid JSON ({exc})") from None
    expected = beside.pop("sha256", None)
    actual = file_sha256(path)
    if expected != actual:
        raise ModelError(f"{path}: sha256 {actual[:16]}... does not match {sidecar.name} "
                         f"({str(expected)[:16]}...): the file was changed or replaced")
    if beside != card:
        differing = sorted(k for k in set(beside) | set(card) if beside.get(k) != card.get(k))
        raise ModelError(f"{sidecar}: card differs from the one inside {path.name} in {differing}")


def _check_signature(session: Any, card: dict[str, Any], path: Path) -> None:
    inputs = session.get_inputs()
    outputs = [o.name for o in session.get_outputs()]
    if [i.name for i in inputs] != [INPUT] or sorted(outputs) != sorted(OUTPUTS):
        raise ModelError(f"{path}: expected input {INPUT!r} and outputs {list(OUTPUTS)}; found "
                         f"{[i.name for i in inputs]} -> {outputs}")
    shape = inputs[0].shape
    if shape[1:] != [card["window"], len(card["features"])]:
        raise ModelError(f"{path}: input shape {shape} does not match the card's window "
                         f"{card['window']} and {len(card['features'])} features")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__

