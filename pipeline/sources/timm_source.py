"""timm models by name: ``resnet50.a1_in1k``, ``resnet50`` (its default tag), ``resnet*``, ``*.in1k``.

Names and wildcards mean what ``timm.list_models`` makes of them. A wildcard expands to
pretrained tags only (every weight set is its own model); with ``--random-init`` it expands to
architectures, and model ids get an ``@random-init`` suffix so untrained results never mix with
trained ones. Weights come from the hub repo named in timm's pretrained config (fetched and
verified by :mod:`pipeline.sources.hub_download`), or for a few old models from a URL (torch's cache).
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any

from pipeline.errors import ModelLoadError, UnknownModelError, one_line
from pipeline.sources import hub_download, urlfetch
from pipeline.sources.base import RANDOM_SUFFIX, LoadedModel, ModelInfo, ModelRef, Preprocess, Source, register_source

if TYPE_CHECKING:
    import torch.nn as nn

_WILDCARD = set("*?[")


def _suggest(name: str) -> str:
    import timm

    close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.7)
    return f"; did you mean {', '.join(close)}?" if close else f" (list some with `pans zoo '{name[:4]}*'`)"


def _pretrained_cfg(name: str) -> Any:
    from timm.models import get_pretrained_cfg

    try:
        return get_pretrained_cfg(name, allow_unregistered=False)
    except (RuntimeError, KeyError, ValueError):
        return None


def _weights_location(cfg: Any) -> str | None:
    if cfg is None:
        return None
    return f"hf-hub:{cfg.hf_hub_id}" if cfg.hf_hub_id else cfg.url or None


@register_source("timm")
class TimmSource(Source):
    description = "timm architecture, pretrained tag or wildcard (resnet50, resnet50.a1_in1k, 'resnet*')"

    def resolve(self, name: str, *, random_init: bool = False) -> list[ModelRef]:
        import timm
        from timm.models import split_model_name_tag

        if _WILDCARD & set(name):
            names = timm.list_models(name, pretrained=True)
            if random_init:  # weights do not matter: one entry per architecture
                names = sorted({n.split(".", 1)[0] for n in names} | set(timm.list_models(name)))
            if not names:
                raise UnknownModelError(
                    f"no timm model matches {name!r}" + ("" if random_init else " with pretrained weights")
                )
            return [self._ref(n, random_init) for n in names]
        arch, tag = split_model_name_tag(name)
        if not timm.is_model(arch):
            raise UnknownModelError(f"unknown timm model {name!r}{_suggest(arch)}")
        if random_init:  # a tag named explicitly keeps its config (input size)
            return [self.random_init(ModelRef(f"timm:{name}", "timm", name, extra={"keep_tag": True}))]
        cfg = _pretrained_cfg(name)
        if cfg is None or (tag and cfg.tag != tag):
            tags = ", ".join(n.split(".", 1)[1] for n in timm.list_models(arch, pretrained=True)) or "none"
            raise UnknownModelError(f"timm model {arch!r} has no pretrained tag {tag!r} (tags: {tags})")
        if not _weights_location(cfg):
            raise UnknownModelError(f"timm model {name!r} has no pretrained weights; use --random-init")
        return [self._ref(f"{arch}.{cfg.tag}", False)]

    def _ref(self, name: str, random_init: bool) -> ModelRef:
        return self.maybe_random(ModelRef(model_id=f"timm:{name}", source="timm", name=name), random_init)

    def random_init(self, ref: ModelRef) -> ModelRef:
        """Untrained weights do not depend on the tag: ``resnet50.a1_in1k`` -> ``timm:resnet50@random-init``,
        except for a tag named explicitly with ``--random-init`` (its config, e.g. input size, is kept)."""
        if not ref.pretrained:
            return ref
        name = ref.name if ref.extra.get("keep_tag") else ref.name.split(".", 1)[0]
        return ModelRef(model_id=f"timm:{name}{RANDOM_SUFFIX}", source="timm", name=name, pretrained=False)

    def info(self, ref: ModelRef) -> ModelInfo:
        cfg = _pretrained_cfg(ref.name)
        return ModelInfo(
            architecture=ref.name.split(".", 1)[0],
            preprocess=Preprocess.from_cfg(cfg),
            pretrained_tag=cfg.tag if (cfg is not None and ref.pretrained) else None,
            license=getattr(cfg, "license", None) if ref.pretrained else None,
            weights=_weights_location(cfg) if ref.pretrained else None,
        )

    def build(self, ref: ModelRef) -> nn.Module:
        import timm

        return timm.create_model(ref.name, pretrained=False)

    def downloads(self, ref: ModelRef) -> bool:
        return ref.pretrained  # random init: nothing to download

    def fetch(self, ref: ModelRef) -> dict[str, Any]:
        if not ref.pretrained:
            return {}
        cfg = _pretrained_cfg(ref.name)
        if cfg is not None and cfg.hf_hub_id:
            repo, revision = hub_download.split_repo_revision(cfg.hf_hub_id)
            revision = ref.revision or revision  # a survey re-fetching pins the commit it saw first
            names = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else hub_download.WEIGHT_FILES
            file = hub_download.fetch_weight_file(repo, revision, names)
            return {
                "revision": file.revision,
                "path": file.path,
                "sha256": file.sha256,
                "size": file.size,
                "weights": f"hf-hub:{repo}/{file.filename}",
            }
        if cfg is not None and cfg.url:
            got = urlfetch.fetch_url(cfg.url)
            return {
                "revision": None,
                "path": got["path"],
                "sha256": got["sha256"],
                "size": got["size"],
                "weights": cfg.url,
            }
        raise ModelLoadError(f"timm:{ref.name}: no pretrained weights to fetch")

    def load(self, ref: ModelRef, fetched: dict[str, Any] | None = None) -> LoadedModel:
        import timm

        fetched = fetched or self.fetch(ref)
        try:
            if ref.pretrained:
                model = timm.create_model(ref.name, pretrained=True, pretrained_cfg_overlay={"file": fetched["path"]})
            else:
                model = timm.create_model(ref.name, pretrained=False)
        except Exception as exc:  # timm raises many types for weights that do not fit
            raise ModelLoadError(f"timm could not build {ref.name!r}: {type(exc).__name__}: {one_line(exc)}") from exc
        info = self.info(ref)
        cfg = getattr(model, "pretrained_cfg", None) or {}
        return LoadedModel(
            ref=ref,
            model=model,
            preprocess=Preprocess.from_cfg(cfg),
            architecture=info.architecture,
            pretrained_tag=info.pretrained_tag,
            revision=fetched.get("revision"),
            weights_sha256=fetched.get("sha256"),
            license=info.license,
            class_names=cfg.get("label_names"),
        )
