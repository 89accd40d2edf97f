"""``local-dir:PATH``: a timm export folder (``config.json`` + ``model.safetensors``)."""

from __future__ import annotations

import json
from pathlib import Path

import timm

from pipeline.errors import ModelLoadError, UnknownModelError
from pipeline.sources.base import LoadedModel, ModelRef, Preprocess, Source, register_source, sha256_file

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@register_source("local-dir")
class LocalDirSource(Source):
    description = "a timm export folder with config.json and model.safetensors"

    def resolve(self, name: str, *, random_init: bool = False) -> list[ModelRef]:
        path = Path(name).expanduser()
        if not (path / "config.json").is_file():
            raise UnknownModelError(f"local-dir:{name}: no config.json in {path} (expected a timm export folder)")
        return [ModelRef(model_id=f"local-dir:{path.resolve()}", source="local-dir", name=str(path.resolve()))]

    def load(self, ref: ModelRef) -> LoadedModel:
        path = Path(ref.name)
        try:
            config = json.loads((path / "config.json").read_text())
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"local-dir:{path}: unreadable config.json: {exc}") from exc
        arch = config.get("architecture")
        if not arch or not timm.is_model(arch):
            raise ModelLoadError(f"local-dir:{path}: config.json names no known timm architecture ({arch!r})")
        weights = next((path / f for f in WEIGHT_FILES if (path / f).is_file()), None)
        if weights is None:
            raise ModelLoadError(f"local-dir:{path}: no model.safetensors")
        cfg = dict(config.get("pretrained_cfg") or {})
        num_classes = config.get("num_classes", cfg.get("num_classes"))
        kwargs = {"num_classes": num_classes} if num_classes else {}
        try:
            model = timm.create_model(arch, pretrained=False, **kwargs)
            timm.models.load_checkpoint(model, str(weights), strict=True, weights_only=True)
        except Exception as exc:
            raise ModelLoadError(f"local-dir:{path}: weights do not fit {arch}: {exc}") from exc
        return LoadedModel(
            ref=ref,
            model=model,
            preprocess=Preprocess.from_cfg(cfg),
            architecture=arch,
            pretrained_tag=cfg.get("tag"),
            weights_sha256=sha256_file(weights),
            license=cfg.get("license"),
            class_names=config.get("label_names"),
        )
