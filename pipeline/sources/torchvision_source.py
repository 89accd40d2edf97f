"""``torchvision:NAME[:WEIGHTS]``: torchvision's classification models and their weight enums.

``torchvision:mobilenet_v2`` means the ``DEFAULT`` weights, recorded under their real enum name
(``torchvision:mobilenet_v2:IMAGENET1K_V2``), so two spellings of one model are one model. The
preprocessing comes from the weights' own transforms, the class names and ImageNet top-1 from
their metadata. Files live in torch's cache (``$TORCH_HOME/hub/checkpoints``); see
:mod:`pipeline.sources.urlfetch` for the hash policy.
"""

from __future__ import annotations

import fnmatch
from typing import TYPE_CHECKING, Any

from pipeline.errors import ModelLoadError, UnknownModelError, one_line
from pipeline.sources import urlfetch
from pipeline.sources.base import RANDOM_SUFFIX, LoadedModel, ModelInfo, ModelRef, Preprocess, Source, register_source

if TYPE_CHECKING:
    import torch.nn as nn


def _models() -> list[str]:
    import torchvision.models

    return torchvision.models.list_models(module=torchvision.models)


def _weights(name: str, weights: str | None) -> Any:
    """The weights enum member, or a one-line error listing the valid names."""
    from torchvision.models import get_model_weights

    enum = get_model_weights(name)
    key = weights or "DEFAULT"
    try:
        return enum[key] if key != "DEFAULT" else enum.DEFAULT
    except KeyError:
        known = ", ".join(k for k in enum.__members__ if k != "DEFAULT")
        raise UnknownModelError(f"torchvision:{name} has no weights {key!r} (known: {known})") from None


def preprocess_from_weights(weights: Any) -> Preprocess:
    """Resize/crop size, mean/std and interpolation from the weights' transforms (torchvision's recipe)."""
    if weights is None:
        return Preprocess()
    transform = weights.transforms()
    crop = int(transform.crop_size[0])
    resize = int(transform.resize_size[0])
    return Preprocess(
        input_size=(3, crop, crop),
        mean=tuple(float(v) for v in transform.mean),
        std=tuple(float(v) for v in transform.std),
        interpolation=str(transform.interpolation.value),
        crop_pct=crop / resize,
    )


def _top1(weights: Any) -> float | None:
    metrics = (weights.meta.get("_metrics") or {}) if weights is not None else {}
    for values in metrics.values():
        if isinstance(values, dict) and "acc@1" in values:
            return float(values["acc@1"])
    return None


@register_source("torchvision")
class TorchvisionSource(Source):
    description = "a torchvision classification model, torchvision:NAME[:WEIGHTS] (e.g. resnet50:IMAGENET1K_V2)"

    def resolve(self, name: str, *, random_init: bool = False) -> list[ModelRef]:
        arch, _, weights = name.partition(":")
        known = _models()
        if set("*?[") & set(arch):
            archs = fnmatch.filter(known, arch)
            if not archs:
                raise UnknownModelError(f"no torchvision classification model matches {arch!r}")
            if weights:
                raise UnknownModelError(f"torchvision:{name}: name one model when giving weights")
        elif arch not in known:
            raise UnknownModelError(f"unknown torchvision model {arch!r} (classification models only)")
        else:
            archs = [arch]
        refs = []
        for a in archs:
            if random_init:
                refs.append(self.random_init(ModelRef(f"torchvision:{a}", "torchvision", a)))
                continue
            member = _weights(a, weights or None)
            refs.append(ModelRef(f"torchvision:{a}:{member.name}", "torchvision", f"{a}:{member.name}"))
        return refs

    def random_init(self, ref: ModelRef) -> ModelRef:
        """One untrained model per architecture: ``resnet50:IMAGENET1K_V2`` -> ``torchvision:resnet50@random-init``."""
        if not ref.pretrained:
            return ref
        arch = ref.name.partition(":")[0]
        return ModelRef(f"torchvision:{arch}{RANDOM_SUFFIX}", "torchvision", arch, pretrained=False)

    @staticmethod
    def _split(ref: ModelRef) -> tuple[str, Any]:
        arch, _, weights = ref.name.partition(":")
        return arch, _weights(arch, weights or None)

    def info(self, ref: ModelRef) -> ModelInfo:
        arch, weights = self._split(ref)
        return ModelInfo(
            architecture=arch,
            preprocess=preprocess_from_weights(weights),  # random-init still gets the recipe's input size
            pretrained_tag=weights.name if ref.pretrained else None,
            license=None,  # torchvision publishes no per-weights license; see docs/sources.md
            top1=_top1(weights) if ref.pretrained else None,
            weights=weights.url if ref.pretrained else None,
        )

    def build(self, ref: ModelRef) -> nn.Module:
        from torchvision.models import get_model

        arch, weights = self._split(ref)
        num_classes = len(weights.meta["categories"]) if weights.meta.get("categories") else 1000
        return get_model(arch, weights=None, num_classes=num_classes)

    def downloads(self, ref: ModelRef) -> bool:
        return ref.pretrained  # random init: nothing to download

    def fetch(self, ref: ModelRef) -> dict[str, Any]:
        if not ref.pretrained:
            return {}
        _, weights = self._split(ref)
        got = urlfetch.fetch_url(weights.url)
        return {
            "revision": weights.name,
            "path": got["path"],
            "sha256": got["sha256"],
            "size": got["size"],
            "weights": weights.url,
        }

    def load(self, ref: ModelRef, fetched: dict[str, Any] | None = None) -> LoadedModel:
        arch, weights = self._split(ref)
        model = self.build(ref)
        fetched = fetched or self.fetch(ref)
        if ref.pretrained:
            try:
                import torch

                state = torch.load(fetched["path"], map_location="cpu", weights_only=True)  # never a pickle
                model.load_state_dict(state, strict=True)
            except Exception as exc:
                raise ModelLoadError(
                    f"torchvision:{ref.name}: weights do not load: {type(exc).__name__}: {one_line(exc)}"
                ) from exc
        info = self.info(ref)
        return LoadedModel(
            ref=ref,
            model=model,
            preprocess=info.preprocess,
            architecture=arch,
            pretrained_tag=info.pretrained_tag,
            revision=fetched.get("revision"),
            weights_sha256=fetched.get("sha256"),
            license=info.license,
            top1=info.top1,
            class_names=list(weights.meta["categories"]) if ref.pretrained and weights.meta.get("categories") else None,
        )
