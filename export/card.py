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

from rul.errors import OutputError
from rul.forecaster import Forecaster, file_sha256, sidecar_path
from rul.io import atomic_write, dumps, json_ready, write_synced
from rul.model_card import CARD_KEY


def temporary_path(out: Path) -> Path:
    """Where a model file is written and checked before it takes `out`'s place."""
    return out.with_name(f".{out.name}.tmp")


def write_temporary(proto: Any, out: Path) -> Path:
    """Serialise an onnx.ModelProto to `out`'s temporary name, on disk; errors name `out`."""
    tmp = temporary_path(out)
    try:
        write_synced(tmp, lambda f: f.write(proto.SerializeToString()))
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {out}: {exc.strerror or exc}") from None
    return tmp


def install_model(tmp: Path, card: dict[str, Any], out: Path) -> None:
    """Move the checked model file `tmp` (its card inside) to `out`, its sidecar beside it.

    The sidecar goes first, so no model file appears without its card. If the model cannot
    then be moved into place, the sidecar that was there before (a re-export, or a card
    recorded into an existing model) is put back, so the old pair still matches."""
    sidecar = sidecar_path(out)
    before = sidecar.read_bytes() if sidecar.is_file() else None
    text = dumps({**card, "sha256": file_sha256(tmp)})
    atomic_write(sidecar, lambda f: f.write(text.encode() + b"\n"))
    try:
        os.replace(tmp, out)
    except OSError as exc:
        if before is None:
            sidecar.unlink(missing_ok=True)
        else:
            atomic_write(sidecar, lambda f: f.write(before))
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
    import onnx  # only here: serving reads model files with onnxruntime alone

    model = Path(model)
    card = Forecaster.load(model).card  # refuses a file whose card or hash does not match
    card = {**card, "metrics": {**card.get("metrics", {}), "test": json_ready(test)}}
    proto = onnx.load_model(str(model), load_external_data=False)
    embed_card(proto, card)
    tmp = write_temporary(proto, model)
    try:
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
