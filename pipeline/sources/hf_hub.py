"""``hf-hub:ORG/NAME[@REVISION]``: any timm-compatible repository on the Hugging Face hub.

``config.json`` is fetched first (it is small and tells the architecture); the weights are then
fetched at the *same commit*, so a repository updated between the two requests cannot mix versions.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from pipeline.errors import UnknownModelError
from pipeline.sources import hub_download
from pipeline.sources.base import LoadedModel, ModelInfo, ModelRef, Source, register_source
from pipeline.sources.timm_export import build_from_export, export_info, load_export, read_config

if TYPE_CHECKING:
    import torch.nn as nn

_REPO = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


@register_source("hf-hub")
class HfHubSource(Source):
    description = "a timm-compatible Hugging Face hub repository, hf-hub:ORG/NAME[@REVISION]"

    def resolve(self, name: str, *, random_init: bool = False) -> list[ModelRef]:
        repo, revision = hub_download.split_repo_revision(name)
        if not _REPO.fullmatch(repo) or "--" in repo or ".." in repo:
            raise UnknownModelError(f"hf-hub:{name}: expected hf-hub:ORG/NAME[@REVISION]")
        ref = ModelRef(model_id=f"hf-hub:{name}", source="hf-hub", name=repo, revision=revision)
        return [self.maybe_random(ref, random_init)]

    def _config(self, ref: ModelRef) -> tuple[dict[str, Any], hub_download.HubFile]:
        file = hub_download.fetch_file(ref.name, "config.json", ref.revision)
        return read_config(file.path, f"hf-hub:{ref.name}"), file

    def info(self, ref: ModelRef) -> ModelInfo:
        config, _ = self._config(ref)
        return export_info(config, f"hf-hub:{ref.name}", weights=f"hf-hub:{ref.name}" if ref.pretrained else None)

    def build(self, ref: ModelRef) -> nn.Module:
        config, _ = self._config(ref)
        return build_from_export(config, f"hf-hub:{ref.name}", None)

    def fetch(self, ref: ModelRef) -> dict[str, Any]:
        config_file = hub_download.fetch_file(ref.name, "config.json", ref.revision)
        result: dict[str, Any] = {"revision": config_file.revision, "config_path": config_file.path}
        if ref.pretrained:
            weights = hub_download.fetch_weight_file(ref.name, config_file.revision)  # same commit as the config
            result.update(
                path=weights.path,
                sha256=weights.sha256,
                size=weights.size,
                weights=f"hf-hub:{ref.name}/{weights.filename}",
            )
        return result

    def load(self, ref: ModelRef, fetched: dict[str, Any] | None = None) -> LoadedModel:
        fetched = fetched or self.fetch(ref)
        return load_export(ref, fetched["config_path"], f"hf-hub:{ref.name}", fetched)
