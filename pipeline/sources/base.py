"""What every model source provides: parse a spec, expand it, load a model with its preprocessing.

A *spec* is the text a user writes (``resnet50.a1_in1k``, ``hf-hub:timm/resnet18.a1_in1k``,
``py:models.py:make``). A source turns it into one or more :class:`ModelRef` (wildcards expand),
and loads each ref into a :class:`LoadedModel`: the module plus everything needed to feed it
(input size, mean/std) and to trace its numbers back (revision, weight file hash).

New sources subclass :class:`Source` and register once with ``@register_source("prefix")``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pipeline.registry import Registry

if TYPE_CHECKING:
    import torch.nn as nn

#: Model-id suffix of untrained weights, so untrained results never mix with trained ones.
RANDOM_SUFFIX = "@random-init"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """How images must be prepared for a model: travels with its weights (as in torchvision)."""

    input_size: tuple[int, int, int] = (3, 224, 224)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bilinear"
    crop_pct: float = 0.875

    @classmethod
    def from_cfg(cls, cfg: Any) -> Preprocess:
        """Read a timm-style ``pretrained_cfg`` (dict or dataclass); missing keys keep defaults."""
        if cfg is None:
            return cls()
        if not isinstance(cfg, dict):
            cfg = {
                k: getattr(cfg, k)
                for k in ("input_size", "mean", "std", "interpolation", "crop_pct")
                if hasattr(cfg, k)
            }
        kwargs: dict[str, Any] = {}
        if cfg.get("input_size"):
            size = tuple(int(v) for v in cfg["input_size"])
            if len(size) == 2:
                size = (3, *size)
            kwargs["input_size"] = size
        for key in ("mean", "std"):
            if cfg.get(key) is not None:
                kwargs[key] = tuple(float(v) for v in cfg[key])
        if cfg.get("interpolation"):
            kwargs["interpolation"] = str(cfg["interpolation"])
        if cfg.get("crop_pct"):
            kwargs["crop_pct"] = float(cfg["crop_pct"])
        return cls(**kwargs)

    def with_image_size(self, size: int | None) -> Preprocess:
        if not size:
            return self
        return Preprocess((self.input_size[0], size, size), self.mean, self.std, self.interpolation, self.crop_pct)


@dataclass(frozen=True)
class ModelRef:
    """One concrete model a spec resolved to; cheap to create, pickles across Ray tasks."""

    model_id: str  # canonical, e.g. "timm:resnet50.a1_in1k"
    source: str  # registry name of the source
    name: str  # what the source needs to load it (architecture[.tag], repo id, path, ...)
    pretrained: bool = True
    revision: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoadedModel:
    """A model ready for detection, with the metadata recorded beside its results."""

    ref: ModelRef
    model: nn.Module
    preprocess: Preprocess
    architecture: str
    pretrained_tag: str | None = None
    revision: str | None = None
    weights_sha256: str | None = None
    license: str | None = None
    top1: float | None = None
    class_names: list[str] | None = None
    #: Random fills not yet run (``load_model(defer_fills=True)``); the model must not be read before.
    deferred_fills: Any = None

    @property
    def model_id(self) -> str:
        return self.ref.model_id

    def record(self) -> dict[str, Any]:
        """Columns of the ``models`` table that describe the model itself."""
        pp = self.preprocess
        return {
            "model_id": self.model_id,
            "source": self.ref.source,
            "architecture": self.architecture,
            "pretrained_tag": self.pretrained_tag,
            "pretrained": self.ref.pretrained,
            "revision": self.revision,
            "weights_sha256": self.weights_sha256,
            "num_params": sum(p.numel() for p in self.model.parameters()),
            "mean": list(pp.mean),
            "std": list(pp.std),
            "interpolation": pp.interpolation,
            "crop_pct": pp.crop_pct,
            "license": self.license,
            "top1": self.top1,
        }

@dataclass(frozen=True)
class ModelInfo:
    """What a source knows about a model without its weights (for ``pans zoo`` and failure records)."""

    architecture: str
    preprocess: Preprocess
    pretrained_tag: str | None = None
    license: str | None = None
    top1: float | None = None
    weights: str | None = None  # where the weights would come from (hub repo, URL, file)


class Source:
    """Base class of a model source. Subclasses set ``prefix`` and implement resolve/info/build/load.

    The split follows the survey: ``resolve`` and ``info`` are cheap (no weights), ``fetch`` puts
    weights in the local cache (a CPU task, network only), ``load`` builds the model from the cache.
    """

    prefix: ClassVar[str]
    description: ClassVar[str] = ""
    #: False for sources whose models come without an init of their own (``py:``, ``local-dir:``):
    #: their ``--random-init`` model (and null twin) is the built model after every module's
    #: ``reset_parameters()`` (:func:`pipeline.sources.load_model`).
    own_init: ClassVar[bool] = True
    #: False for sources whose trained weights may be made by code (``py:`` factories, which can draw
    #: or train their weights in the call): their trained models are built exactly as the code runs,
    #: not with overwritten draws skipped (pipeline/sources/overwritten_fills.py), which moves the
    #: random stream. Checkpoint sources skip the init their checkpoint overwrites.
    checkpoint_weights: ClassVar[bool] = True

    def random_init(self, ref: ModelRef) -> ModelRef:
        """The untrained variant of ``ref`` (same architecture, ``@random-init`` id). Sources whose
        ``name`` carries a weight tag override this to drop it: one random-init model per architecture."""
        if not ref.pretrained:
            return ref
        extra = dict(ref.extra)
        if extra.get("former_ids"):
            extra["former_ids"] = [i + RANDOM_SUFFIX for i in extra["former_ids"]]
        return replace(ref, model_id=ref.model_id + RANDOM_SUFFIX, pretrained=False, extra=extra)

    def maybe_random(self, ref: ModelRef, random_init: bool) -> ModelRef:
        return self.random_init(ref) if random_init else ref

    def resolve(self, name: str, *, random_init: bool = False) -> list[ModelRef]:
        """Expand the part of a spec after ``prefix:`` into concrete refs (no weight download)."""
        raise NotImplementedError

    def info(self, ref: ModelRef) -> ModelInfo:
        """Architecture, preprocessing and provenance, without weights."""
        raise NotImplementedError

    def build(self, ref: ModelRef) -> nn.Module:
        """The architecture with no weights loaded; ``describe`` calls it on the meta device."""
        raise NotImplementedError

    def fetch(self, ref: ModelRef) -> dict[str, Any]:
        """Download the weights into the local cache only; return ``revision``, ``path``, ``sha256``."""
        return {}

    def downloads(self, ref: ModelRef) -> bool:
        """Whether ``fetch`` may go to the network (a survey gives it a fetch task first); else ``load``
        finds everything on its own (random init, a local file) and the survey goes straight to it."""
        return True

    def load(self, ref: ModelRef, fetched: dict[str, Any] | None = None) -> LoadedModel:
        """Build the module and load its weights (on CPU); ``fetched`` is this ref's ``fetch`` result."""
        raise NotImplementedError


SOURCES: Registry[type[Source]] = Registry("model source")


def register_source(prefix: str):
    """Class decorator: make a :class:`Source` reachable as ``prefix:...`` in specs."""

    def decorator(cls: type[Source]) -> type[Source]:
        cls.prefix = prefix
        return SOURCES.register(prefix)(cls)

    return decorator


def portable_path(path: Path) -> str:
    """How a local file or folder is named in a model id: relative to the working directory when it
    lies inside it (the same checkout, machine or Ray job working directory gives the same id), else
    absolute. The content itself is told apart by its hash (``weights_sha256``), not by its path.
    """
    resolved = path.resolve()
    try:
        return resolved.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(resolved)


def former_ids(ref: ModelRef) -> tuple[str, ...]:
    """Ids the same model had in folders written by earlier versions (absolute ``py:``/``local-dir:``
    paths), so resume over an old folder finds the models it already holds."""
    return tuple(ref.extra.get("former_ids", ()))


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hash of a weight file, recorded so a changed upstream file is visible in results."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
