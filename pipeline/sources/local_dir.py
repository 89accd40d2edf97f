"""``local-dir:PATH``: a timm export folder (``config.json`` + ``model.safetensors``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import ModelLoadError, UnknownModelError
from pipeline.sources.base import LoadedModel, ModelInfo, ModelRef, Source, portable_path, register_source, sha256_file
from pipeline.sources.hub_download import WEIGHT_FILES
from pipeline.sources.timm_export import build_from_export, export_info, load_export, read_config

if TYPE_CHECKING:
    import torch.nn as nn


@register_source("local-dir")
class LocalDirSource(Source):
    description = "a timm export folder with config.json and model.safetensors"
    own_init = False

    def resolve(self, name: str, *, random_init: bool = False) -> list[ModelRef]:
        path = Path(name).expanduser()
        if not (path / "config.json").is_file():
            raise UnknownModelError(f"local-dir:{name}: no config.json in {path} (expected a timm export folder)")
        # Portable id (relative to the working directory); weights_sha256 tells the contents apart.
        model_id, former = f"local-dir:{portable_path(path)}", f"local-dir:{path.resolve()}"
        extra = {"former_ids": [former]} if former != model_id else {}
        ref = ModelRef(model_id=model_id, source="local-dir", name=str(path.resolve()), extra=extra)
        return [self.maybe_random(ref, random_init)]

    def _label(self, ref: ModelRef) -> str:
        return f"local-dir:{ref.name}"

    def info(self, ref: ModelRef) -> ModelInfo:
        config = read_config(Path(ref.name) / "config.json", self._label(ref))
        return export_info(config, self._label(ref), weights=ref.name if ref.pretrained else None)

    def build(self, ref: ModelRef) -> nn.Module:
        return build_from_export(read_config(Path(ref.name) / "config.json", self._label(ref)), self._label(ref), None)

    def downloads(self, ref: ModelRef) -> bool:
        return False  # a file on a path every node sees

    def fetch(self, ref: ModelRef) -> dict[str, Any]:
        """Nothing to download: find the weight file and hash it."""
        if not ref.pretrained:
            return {}
        path = Path(ref.name)
        weights = next((path / f for f in WEIGHT_FILES if (path / f).is_file()), None)
        if weights is None:
            raise ModelLoadError(f"{self._label(ref)}: no {' or '.join(WEIGHT_FILES)} in the folder")
        return {"revision": None, "path": str(weights), "sha256": sha256_file(weights), "size": weights.stat().st_size}

    def load(self, ref: ModelRef, fetched: dict[str, Any] | None = None) -> LoadedModel:
        fetched = fetched or self.fetch(ref)
        return load_export(ref, Path(ref.name) / "config.json", self._label(ref), fetched)
