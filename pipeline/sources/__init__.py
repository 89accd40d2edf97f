"""Model sources: turn spec text into loaded models. See :mod:`pipeline.sources.base`.

``resolve_specs`` expands specs (wildcards, models files) into :class:`ModelRef` without
touching weights; ``load_model`` builds one. A spec without a known ``prefix:`` is a timm name.
"""

from __future__ import annotations

from pipeline.errors import UnknownModelError
from pipeline.sources import local_dir, pyfile, timm_source  # noqa: F401  (registers sources)
from pipeline.sources.base import SOURCES, LoadedModel, ModelRef, Preprocess, Source, register_source

DEFAULT_SOURCE = "timm"

__all__ = [
    "SOURCES",
    "LoadedModel",
    "ModelRef",
    "Preprocess",
    "Source",
    "load_model",
    "register_source",
    "resolve_spec",
    "resolve_specs",
    "split_spec",
]


def split_spec(spec: str) -> tuple[str, str]:
    """``"hf-hub:org/name"`` -> ``("hf-hub", "org/name")``; no known prefix -> the default source."""
    spec = spec.strip()
    prefix, sep, rest = spec.partition(":")
    if sep and prefix in SOURCES:
        return prefix, rest
    return DEFAULT_SOURCE, spec


def resolve_spec(spec: str, *, random_init: bool = False) -> list[ModelRef]:
    prefix, rest = split_spec(spec)
    if not rest:
        raise UnknownModelError(f"empty model spec {spec!r}")
    return SOURCES.get(prefix)().resolve(rest, random_init=random_init)


def resolve_specs(specs: list[str], *, random_init: bool = False) -> list[ModelRef]:
    """Resolve many specs, dropping duplicates while keeping order."""
    seen: dict[str, ModelRef] = {}
    for spec in specs:
        for ref in resolve_spec(spec, random_init=random_init):
            seen.setdefault(ref.model_id, ref)
    return list(seen.values())


def load_model(ref: ModelRef | str, *, random_init: bool = False) -> LoadedModel:
    """Load a ref (or a spec that must resolve to exactly one model)."""
    if isinstance(ref, str):
        refs = resolve_spec(ref, random_init=random_init)
        if len(refs) != 1:
            raise UnknownModelError(f"spec {ref!r} matches {len(refs)} models; name exactly one")
        ref = refs[0]
    loaded = SOURCES.get(ref.source)().load(ref)
    loaded.model.eval()
    return loaded
