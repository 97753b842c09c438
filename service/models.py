"""The models a service answers with: a default model file and, optionally, a folder of more.

Each model is served by name, its file name without `.onnx` (`cmapss-fd001`); answers name
the model and its version (`Forecaster.version`). Loading verifies each file (card, sidecar
hash, signature) through `rul.forecaster.Forecaster.load`, so a corrupt file stops startup.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rul.forecaster import Forecaster, ModelError, file_sha256
from service.errors import ApiError


@dataclass
class ModelRegistry:
    """Loaded Forecasters by name, and which one answers when a request names none."""

    models: dict[str, Forecaster]
    default: str

    @classmethod
    def load(cls, model: Path, models_dir: Path | None = None, *,
             threads: int | None = None) -> ModelRegistry:
        """Load the default `model` and every `*.onnx` in `models_dir` (ModelError if any fails)."""
        paths = [Path(model)]
        if models_dir is not None:
            models_dir = Path(models_dir)
            if not models_dir.is_dir():
                raise ModelError(f"{models_dir}: models folder not found")
            default = paths[0].resolve()
            paths += sorted(p for p in models_dir.glob("*.onnx") if p.resolve() != default)
        models: dict[str, Forecaster] = {}
        for path in paths:
            name = model_name(path)
            if name in models and file_sha256(path) == file_sha256(models[name].path):
                continue  # the same model twice (the default copied into the folder)
            if name in models:
                raise ModelError(f"{path}: a second model named {name!r} "
                                 f"(first: {models[name].path}); model names must be unique")
            models[name] = Forecaster.load(path, threads=threads)
        return cls(models, model_name(paths[0]))

    def get(self, name: str | None = None, field: str = "model") -> Forecaster:
        """The model called `name` (the default for None); 404 naming the field otherwise."""
        return self.named(name, field)[1]

    def named(self, name: str | None = None, field: str = "model") -> tuple[str, Forecaster]:
        """(name, model) for a requested name, the default for None."""
        if name is None:
            return self.default, self.models[self.default]
        if not isinstance(name, str):
            raise ApiError(400, f"model must be a string naming a model; got {name!r}", field)
        try:
            return name, self.models[name]
        except KeyError:
            raise ApiError(404, f"no model named {name!r}; served models: "
                           f"{sorted(self.models)}", field) from None

    def __iter__(self) -> Iterator[Forecaster]:
        return iter(self.models.values())

    def names(self) -> list[str]:
        return sorted(self.models)


def model_name(path: Path) -> str:
    return Path(path).name.removesuffix(".onnx")


def model_summary(name: str, forecaster: Forecaster, default: bool) -> dict[str, Any]:
    """One entry of `GET /v1/models`."""
    card = forecaster.card
    return {
        "name": name,
        "version": forecaster.version,
        "default": default,
        "features": forecaster.features,
        "window": forecaster.window,
        "horizon": forecaster.horizon,
        "rul_cap": forecaster.rul_cap,
        "quantiles": list(forecaster.quantiles),
        "backbone": card.get("backbone"),
        "created": card.get("created"),
    }


def list_models(registry: ModelRegistry) -> dict[str, Any]:
    """The body of `GET /v1/models`."""
    return {"default": registry.default,
            "models": [model_summary(name, registry.models[name], name == registry.default)
                       for name in registry.names()]}


def model_card(registry: ModelRegistry, name: str) -> dict[str, Any]:
    """The body of `GET /v1/models/{name}`: the card, with the model's name, version and the
    sha256 of its file (verified against the sidecar at load)."""
    forecaster = registry.get(name, field="path.name")
    return {"name": name, "version": forecaster.version, "sha256": file_sha256(forecaster.path),
            "card": forecaster.card}
