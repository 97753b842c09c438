"""`rul export`: a checkpoint -> one self-contained ONNX file + MODEL.json, parity-checked.

The file is written to a temporary name, checked (onnx.checker, then torch against
onnxruntime on real windows), and only then renamed into place with its sidecar: a model that
fails the check is never left where a server would load it.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from export.card import embed_card, install_model, temporary_path, write_temporary
from export.graph import ExportModel
from rul.errors import RulError
from rul.fleet import Fleet
from rul.forecaster import INPUT, OUTPUTS, Forecaster, sidecar_path
from rul.io import make_folder
from rul.loaders import read_fleet
from rul.model_card import library_versions
from rul.predictor import Prediction
from rul.windowing import make_windows
from training.checkpoint import CheckpointPredictor, load_checkpoint, resolve_checkpoint

OPSET = 18
# Parity tolerances of the artifact contract: RUL in cycles, probabilities absolute.
RUL_TOLERANCE = 1e-3
PROBABILITY_TOLERANCE = 1e-5


class ExportError(RulError):
    """The exported graph does not reproduce the checkpoint."""


@dataclass(frozen=True)
class ExportResult:
    path: Path
    sidecar: Path
    parity: dict[str, float]
    """Largest absolute torch-vs-onnxruntime difference per output."""


def export_checkpoint(checkpoint: Path | str, out: Path | str,
                      parity_readings: np.ndarray) -> ExportResult:
    """Export the checkpoint (a run directory or .ckpt) to `out` (.onnx) and its sidecar."""
    checkpoint = resolve_checkpoint(checkpoint)
    predictor = load_checkpoint(checkpoint)
    card = export_card(read_run_card(checkpoint))
    out = Path(out)
    if out.suffix != ".onnx":
        raise RulError(f"{out}: the model file name must end in .onnx")
    make_folder(out.parent)
    tmp = temporary_path(out)
    try:
        write_onnx(predictor, card, out)
        parity = parity_check(predictor, Forecaster.load(tmp), parity_readings)
        install_model(tmp, card, out)
    finally:
        tmp.unlink(missing_ok=True)
    return ExportResult(out, sidecar_path(out), parity)


def write_onnx(predictor: CheckpointPredictor, card: dict[str, Any], out: Path) -> Path:
    """Trace the raw-readings model with a dynamic batch axis, weights inside the one file,
    to `out`'s temporary name (returned), not yet in place."""
    model = ExportModel(predictor.preprocessing, predictor.network)
    proto = trace(model, torch.zeros(2, predictor.window, len(predictor.features)))
    embed_card(proto, card)
    proto.doc_string = f"rul model {card.get('name', '')}: raw readings -> RUL, quantiles, P(fail)"
    onnx.checker.check_model(proto, full_check=True)
    return write_temporary(proto, out)


def trace(model: torch.nn.Module, example: torch.Tensor) -> onnx.ModelProto:
    """The module as an ONNX graph: input `readings` with a dynamic batch axis, the three
    outputs, weights inside (no external data file)."""
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    with warnings.catch_warnings():
        # The exporter narrates deprecations of torch internals (and that torchvision is
        # absent), none of which concern this model.
        warnings.simplefilter("ignore")
        exporter_log.setLevel(logging.ERROR)
        try:
            program = torch.onnx.export(model.eval(), (example,), input_names=[INPUT],
                                        output_names=list(OUTPUTS), opset_version=OPSET,
                                        dynamic_shapes={"readings": {0: batch}}, dynamo=True,
                                        external_data=False, verbose=False)
        finally:
            exporter_log.setLevel(level)
    proto = program.model_proto
    proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    return proto


def parity_check(predictor: CheckpointPredictor, forecaster: Forecaster,
                 readings: np.ndarray) -> dict[str, float]:
    """Largest differences between torch and onnxruntime; raises ExportError beyond tolerance."""
    with torch.no_grad():
        reference = predictor.predict_windows(readings)
    exported = forecaster.predict_windows(readings)
    parity = {name: float(np.abs(getattr(reference, name) - getattr(exported, name)).max())
              for name in Prediction.__dataclass_fields__}
    limits = {"rul": RUL_TOLERANCE, "rul_quantiles": RUL_TOLERANCE,
              "failure_probability": PROBABILITY_TOLERANCE}
    failed = {k: v for k, v in parity.items() if not v <= limits[k]}
    if failed:
        raise ExportError(f"onnxruntime disagrees with torch beyond tolerance: {failed} "
                          f"(limits {limits}); no model file was written")
    return parity


def read_run_card(checkpoint: Path) -> dict[str, Any]:
    """The model_card.json of the run a checkpoint belongs to (run/ or run/checkpoints/)."""
    for folder in (checkpoint.parent, checkpoint.parent.parent):
        path = folder / "model_card.json"
        if path.is_file():
            try:
                card = json.loads(path.read_text())
            except (ValueError, UnicodeDecodeError) as exc:
                raise RulError(f"{path}: not valid JSON ({exc})") from None
            missing = [k for k in ("window", "features") if not isinstance(card, dict)
                       or k not in card]
            if missing:
                raise RulError(f"{path}: not a rul model card (no {', '.join(missing)}); train "
                               "the run again or restore the file `rul train` wrote")
            return card
    raise RulError(f"{checkpoint}: no model_card.json in its run directory; export a run "
                   f"directory written by `rul train`")


def export_card(card: dict[str, Any]) -> dict[str, Any]:
    """The training card plus what the file itself is."""
    versions = {**card.get("versions", {}),
                **library_versions(("torch", "onnx", "onnxruntime", "onnxscript"))}
    return {
        **card,
        "format": {"type": "onnx", "opset": OPSET, "input": INPUT, "outputs": list(OUTPUTS),
                   "input_shape": ["batch", card["window"], len(card["features"])]},
        "exported": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": versions,
    }


def parity_readings(fleet: Fleet, features: list[str], window: int, n: int = 2048,
                    seed: int = 0) -> np.ndarray:
    """Up to n real raw windows of a fleet, padded short histories among them."""
    missing = [c for c in features if c not in fleet.frame.columns]
    if missing:
        raise RulError(f"{fleet.source}: no column {missing[0]!r}, which the model reads "
                       f"(its features: {features})")
    raw = fleet.frame[features].to_numpy(dtype=np.float32)
    windows = make_windows(raw, fleet.lengths(), window, ends="every")
    chosen = np.random.default_rng(seed).choice(len(windows), min(n, len(windows)),
                                                replace=False)
    return windows.batch(np.sort(chosen))


def training_fleet_of(card: dict[str, Any]) -> Fleet:
    """The training data a card names, for parity windows; a clear error when it is gone."""
    source = Path(card.get("training_data", {}).get("source", ""))
    if not source.is_file():
        raise RulError(f"the training data {str(source)!r} named in the model card is not "
                       f"here; give --data with readings to check the export on")
    return read_fleet(source)
