"""timm models by name: ``resnet50``, ``resnet50.a1_in1k``, ``timm:resnet50``."""

from __future__ import annotations

import timm

from pipeline.errors import ModelLoadError, UnknownModelError
from pipeline.sources.base import LoadedModel, ModelRef, Preprocess, Source, register_source


@register_source("timm")
class TimmSource(Source):
    description = "timm architecture or pretrained tag (resnet50, resnet50.a1_in1k)"

    def resolve(self, name: str, *, random_init: bool = False) -> list[ModelRef]:
        arch = name.split(".", 1)[0]
        if not timm.is_model(arch):
            raise UnknownModelError(f"unknown timm model {name!r} (try `pans zoo '{arch}*'`)")
        pretrained = not random_init
        model_id = f"timm:{name}" if pretrained else f"timm:{name}@random-init"
        return [ModelRef(model_id=model_id, source="timm", name=name, pretrained=pretrained)]

    def load(self, ref: ModelRef) -> LoadedModel:
        try:
            model = timm.create_model(ref.name, pretrained=ref.pretrained)
        except Exception as exc:  # timm raises many types for missing weights / bad names
            raise ModelLoadError(f"timm could not build {ref.name!r}: {exc}") from exc
        cfg = getattr(model, "pretrained_cfg", None) or {}
        return LoadedModel(
            ref=ref,
            model=model,
            preprocess=Preprocess.from_cfg(cfg),
            architecture=ref.name.split(".", 1)[0],
            pretrained_tag=cfg.get("tag") if ref.pretrained else None,
            license=cfg.get("license"),
        )
