"""The model card: the model's own description, travelling inside the ONNX file and beside it.

Plain JSON (DESIGN.md, artifact contract). Holds the input columns in order, window, horizon,
rul_cap, quantiles, the preprocessing statistics, the backbone and its hyper-parameters, a
fingerprint of the training data, metrics and library versions.
"""

from __future__ import annotations

import hashlib
import platform
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

import pandas as pd

import rul
from rul.fleet import Fleet
from rul.preprocessing import Preprocessing
from rul.schema import CYCLE, SENSORS, SETTINGS

SCHEMA_VERSION = 1
CARD_KEY = "rul.model_card"
"""ONNX metadata_props key holding the card as a JSON string."""

# Names and units of the C-MAPSS channels (Saxena et al., PHM08 2008, tables 1 and 2).
CMAPSS_UNITS: dict[str, tuple[str, str]] = dict(zip(SETTINGS + SENSORS, [
    ("altitude", "kft"), ("Mach number", "-"), ("throttle resolver angle", "%"),
    ("T2 fan inlet temperature", "degR"), ("T24 LPC outlet temperature", "degR"),
    ("T30 HPC outlet temperature", "degR"), ("T50 LPT outlet temperature", "degR"),
    ("P2 fan inlet pressure", "psia"), ("P15 bypass-duct pressure", "psia"),
    ("P30 HPC outlet pressure", "psia"), ("Nf physical fan speed", "rpm"),
    ("Nc physical core speed", "rpm"), ("epr engine pressure ratio", "-"),
    ("Ps30 HPC outlet static pressure", "psia"), ("phi fuel flow / Ps30", "pps/psi"),
    ("NRf corrected fan speed", "rpm"), ("NRc corrected core speed", "rpm"),
    ("BPR bypass ratio", "-"), ("farB burner fuel-air ratio", "-"),
    ("htBleed bleed enthalpy", "-"), ("Nf_dmd demanded fan speed", "rpm"),
    ("PCNfR_dmd demanded corrected fan speed", "rpm"), ("W31 HPT coolant bleed", "lbm/s"),
    ("W32 LPT coolant bleed", "lbm/s"),
], strict=True))


def fleet_fingerprint(fleet: Fleet) -> dict[str, Any]:
    """A stable identity of training data: sha256 of its values, plus its size."""
    hashed = pd.util.hash_pandas_object(fleet.frame, index=False).to_numpy()
    return {
        "source": fleet.source,
        "sha256": hashlib.sha256(hashed.tobytes()).hexdigest(),
        "n_assets": fleet.n_assets,
        "n_rows": int(len(fleet.frame)),
    }


def build_model_card(*, name: str, preprocessing: Preprocessing, config: dict[str, Any],
                     fingerprint: dict[str, Any], calibration: dict[str, float],
                     metrics: dict[str, Any], libraries: tuple[str, ...] = ()) -> dict[str, Any]:
    """The card of a trained model. `config` is the resolved run config (data/model/train)."""
    data, model = config["data"], config["model"]
    return {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "features": preprocessing.features,
        "feature_units": {f: _unit(f) for f in preprocessing.features},
        "settings": preprocessing.settings,
        "window": data["window"],
        "horizon": data["horizon"],
        "rul_cap": data["rul_cap"],
        "quantiles": list(model["quantiles"]),
        "backbone": model["backbone"],
        "hyperparameters": model,
        "config": config,
        "preprocessing": preprocessing.to_dict(),
        "calibration": calibration,
        "training_data": fingerprint,
        "metrics": metrics,
        "versions": library_versions(("numpy", "pandas", *libraries)),
    }


def library_versions(names: tuple[str, ...]) -> dict[str, str]:
    versions = {"rul": rul.__version__, "python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _unit(feature: str) -> dict[str, str]:
    if feature == CYCLE:
        return {"description": "the asset's age: cycles since its start of service, counted "
                "as in the training data", "unit": "cycles"}
    description, unit = CMAPSS_UNITS.get(feature, (feature, "as in the training data"))
    return {"description": description, "unit": unit}
