"""Putting a model file in place with its card, and changing the card of one that exists.

A model file carries its card twice: inside (ONNX metadata) and beside it (MODEL.json, with the
file's sha256). Both are written here, so a card recorded later (`rul evaluate --record` adds
the test metrics) keeps the two in step and the loader's hash check passing. Needs `onnx`,
not torch.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rul.errors import OutputError, RulError
from rul.forecaster import Forecaster, file_sha256, sidecar_path
from rul.io import atomic_write, dumps, json_ready
from rul.model_card import CARD_KEY


def install_model(tmp: Path, card: dict[str, Any], out: Path) -> None:
    """Move the checked model file `tmp` (its card inside) to `out`, its sidecar beside it."""
    text = dumps({**card, "sha256": file_sha256(tmp)})
    # The sidecar first: if it cannot be written, no model file appears without its card.
    atomic_write(sidecar_path(out), lambda f: f.write(text.encode() + b"\n"))
    try:
        os.replace(tmp, out)
    except OSError as exc:
        sidecar_path(out).unlink(missing_ok=True)
        raise OutputError(f"cannot write {out}: {exc.strerror or exc}") from None


def embed_card(proto: Any, card: dict[str, Any]) -> None:
    """Set the card inside an onnx.ModelProto (replacing the one it has)."""
    for entry in proto.metadata_props:
        if entry.key == CARD_KEY:
            entry.value = json.dumps(card, allow_nan=False)
            return
    entry = proto.metadata_props.add()
    entry.key, entry.value = CARD_KEY, json.dumps(card, allow_nan=False)


def record_test_metrics(model: Path, test: dict[str, Any]) -> Forecaster:
    """Write `test` as the card's metrics.test into the model file and its sidecar; the graph
    is untouched. Returns the model as loaded back (hash and card checked)."""
    try:
        import onnx
    except ImportError:
        raise RulError("recording metrics in a model file needs the onnx package "
                       "(pip install 'rul[train]')") from None
    model = Path(model)
    card = Forecaster.load(model).card  # refuses a file whose card or hash does not match
    card = {**card, "metrics": {**card.get("metrics", {}), "test": json_ready(test)}}
    proto = onnx.load_model(str(model), load_external_data=False)
    embed_card(proto, card)
    tmp = model.with_name(f".{model.name}.tmp")
    try:
        atomic_write(tmp, lambda f: f.write(proto.SerializeToString()))
        install_model(tmp, card, model)
    finally:
        tmp.unlink(missing_ok=True)
    return Forecaster.load(model)


def evaluation_record(metrics: dict[str, Any], *, data: dict[str, Any],
                      labels: Path) -> dict[str, Any]:
    """What a card records of a test evaluation: the summary metrics and what they were
    measured on (the test data's fingerprint, the labels file and its hash), and when."""
    return {**metrics, "data": data,
            "labels": {"source": str(labels), "sha256": file_sha256(labels)},
            "evaluated": datetime.now(UTC).isoformat(timespec="seconds")}
