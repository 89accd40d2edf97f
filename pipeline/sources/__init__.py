"""Model sources: turn spec text into loaded models. See :mod:`pipeline.sources.base` and docs/sources.md.

``resolve_specs`` expands specs (wildcards, models files) into :class:`ModelRef` without touching
weights; ``describe`` says what a ref is (building it on the meta device, no weights); ``fetch``
puts its weights in the local cache (network only, a CPU task in a survey); ``load_model`` builds
it from the cache. A spec without a known ``prefix:`` is a timm name.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

from pipeline.errors import ModelLoadError, UnknownModelError, one_line
from pipeline.sources import hf_hub, local_dir, pyfile, timm_source, torchvision_source  # noqa: F401  (registers)
from pipeline.sources.base import SOURCES, LoadedModel, ModelInfo, ModelRef, Preprocess, Source, register_source
from pipeline.sources.hub_download import is_offline, set_offline
from pipeline.sources.models_file import collect_specs, read_models_file
from pipeline.sources.padded_convs import has_padded_convs, padding_summary

DEFAULT_SOURCE = "timm"

__all__ = [
    "SOURCES",
    "LoadedModel",
    "ModelInfo",
    "ModelRef",
    "Preprocess",
    "Source",
    "collect_specs",
    "describe",
    "fetch",
    "has_padded_convs",
    "is_offline",
    "load_model",
    "needs_download",
    "null_model_id",
    "padding_summary",
    "random_init_ref",
    "read_models_file",
    "register_source",
    "resolve_spec",
    "resolve_specs",
    "set_offline",
    "split_null_model_id",
    "split_spec",
    "twin_ref",
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


def _one(ref: ModelRef | str, random_init: bool) -> ModelRef:
    if isinstance(ref, ModelRef):
        return ref
    refs = resolve_spec(ref, random_init=random_init)
    if len(refs) != 1:
        raise UnknownModelError(f"spec {ref!r} matches {len(refs)} models; name exactly one")
    return refs[0]


def fetch(ref: ModelRef | str, *, random_init: bool = False) -> dict[str, Any]:
    """Download ``ref``'s weights into the local cache only; ``revision``, ``path``, ``sha256`` (may be empty)."""
    ref = _one(ref, random_init)
    return SOURCES.get(ref.source)().fetch(ref)


def needs_download(ref: ModelRef) -> bool:
    """Whether fetching ``ref`` may download (see :meth:`Source.downloads`)."""
    return SOURCES.get(ref.source)().downloads(ref)


def random_init_ref(ref: ModelRef) -> ModelRef:
    """The ``--random-init`` ref of ``ref``'s architecture (what its null twin is built from)."""
    return SOURCES.get(ref.source)().random_init(ref)


def twin_ref(ref: ModelRef) -> ModelRef:
    """The ref ``ref``'s null twin is built from: its ``--random-init`` ref (itself when it already is one)."""
    return ref if not ref.pretrained else random_init_ref(ref)


def null_model_id(ref: ModelRef, image_h: int, image_w: int) -> str:
    """The null twin's id, ``<random-init id>@<H>x<W>``: what the twin depends on (architecture and
    input size), not the weights, so every tag of an architecture names the same twin. The one place
    that writes the format; :func:`split_null_model_id` reads it back."""
    return f"{twin_ref(ref).model_id}@{image_h}x{image_w}"


def split_null_model_id(null_id: str) -> tuple[str, int, int] | None:
    """``(random-init id, H, W)`` of a :func:`null_model_id`; None for text not of that form."""
    architecture, sep, size = null_id.rpartition("@")
    h, x, w = size.partition("x")
    if not (sep and x and h.isdigit() and w.isdigit()):
        return None
    return architecture, int(h), int(w)


#: Seed of the random state models are built under (random-init weights are reproducible).
INIT_SEED = 0


def load_model(
    ref: ModelRef | str,
    *,
    random_init: bool = False,
    fetched: dict[str, Any] | None = None,
    defer_fills: bool = False,
) -> LoadedModel:
    """Load a ref (or a spec naming exactly one model) on CPU in eval mode.

    ``fetched`` is the result of :func:`fetch` for this ref on this machine; without it the
    weights are fetched (or found in the cache) first. Construction runs under a fixed seed
    (:data:`INIT_SEED`, without touching the caller's random state), so ``--random-init`` weights,
    and anything a ``py:`` factory draws at random, are the same in every run and on every node.
    A random-init ref of a source without an init of its own (``py:``, ``local-dir:``) gets every
    module's ``reset_parameters()`` after it is built.

    ``defer_fills``: the random fills of a random-init build are not run but returned in
    ``deferred_fills`` (:class:`~pipeline.sources.overwritten_fills.DeferredFills`), for a null
    twin whose draws run beside its detection (pipeline/null_twin.py); run them before reading it.
    """
    import torch

    from pipeline.null_twin import reset_all_parameters
    from pipeline.sources.overwritten_fills import overwritten_fills_skipped

    ref = _one(ref, random_init)
    source = SOURCES.get(ref.source)()
    # No init drawn only to be overwritten, by the model's own init or by its checkpoint (overwritten_fills.py).
    skipping = (
        overwritten_fills_skipped(defer=defer_fills and not ref.pretrained)
        if source.checkpoint_weights or not ref.pretrained
        else nullcontext()
    )
    with torch.random.fork_rng(devices=[]), skipping as mode:
        torch.manual_seed(INIT_SEED)
        loaded = source.load(ref, fetched or None)
        if not ref.pretrained and not source.own_init:
            with torch.no_grad():
                reset_all_parameters(loaded.model)
    loaded.model.eval()
    loaded.deferred_fills = getattr(mode, "deferred", None)
    return loaded


def describe(ref: ModelRef | str, *, random_init: bool = False, inspect: bool = True) -> dict[str, Any]:
    """What ``ref`` is, without its weights: the row ``pans zoo`` prints.

    With ``inspect`` the architecture is built on the meta device (no memory, no download) to
    count parameters and find padded convolutions; a failure to build is reported in ``note``.
    """
    import torch

    ref = _one(ref, random_init)
    source = SOURCES.get(ref.source)()
    info = source.info(ref)
    pp = info.preprocess
    row: dict[str, Any] = {
        "model_id": ref.model_id,
        "architecture": info.architecture,
        "pretrained_tag": info.pretrained_tag,
        "pretrained": ref.pretrained,
        "source": ref.source,
        "input_size": list(pp.input_size),
        "mean": list(pp.mean),
        "std": list(pp.std),
        "interpolation": pp.interpolation,
        "crop_pct": pp.crop_pct,
        "license": info.license,
        "top1": info.top1,
        "weights": info.weights,
        "num_params": None,
        "has_padded_convs": None,
        "conv_layers": None,
        "padded_convs": None,
        "note": None,
    }
    if inspect:
        try:
            with torch.device("meta"):
                model = source.build(ref)
        except ModelLoadError as exc:
            row["note"] = str(exc)
        except Exception as exc:  # some architectures cannot be built on the meta device
            row["note"] = f"not inspected: {type(exc).__name__}: {one_line(exc, 200)}"
        else:
            row["num_params"] = sum(p.numel() for p in model.parameters())
            summary = padding_summary(model)
            row.update({k: summary[k] for k in ("has_padded_convs", "conv_layers", "padded_convs")})
            if not summary["has_padded_convs"]:
                row["note"] = "no padded convolutions" if summary["conv_layers"] else "no convolutions"
    return row
