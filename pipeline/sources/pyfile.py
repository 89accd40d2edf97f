"""``py:FILE.py:FUNCTION``: a user's factory that returns an ``nn.Module``.

The module may carry a timm-style ``pretrained_cfg`` attribute (``input_size``, ``mean``, ``std``,
``label_names``: the class names, used by ``pans impact`` to read labels).
The factory is the user's own code, run as it is; the recorded hash (``weights_sha256``) is that of
the Python file. The model id names the file relative to the working directory
(``py:tests/factories.py:net``), so the same factory run from another checkout is the same model.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import ModelLoadError, UnknownModelError, one_line
from pipeline.sources.base import (
    LoadedModel,
    ModelInfo,
    ModelRef,
    Preprocess,
    Source,
    portable_path,
    register_source,
    sha256_file,
)

if TYPE_CHECKING:
    import torch.nn as nn


def _split(name: str) -> tuple[Path, str]:
    file, sep, func = name.rpartition(":")
    if not sep or not file or not func:
        raise UnknownModelError(f"py:{name}: expected py:FILE.py:FUNCTION")
    return Path(file).expanduser(), func


@register_source("py")
class PyFileSource(Source):
    description = "a Python factory function, py:FILE.py:FUNCTION"
    own_init = False
    checkpoint_weights = False

    def resolve(self, name: str, *, random_init: bool = False) -> list[ModelRef]:
        path, func = _split(name)
        if not path.is_file():
            raise UnknownModelError(f"py:{name}: no such file {path}")
        # The id is portable (path relative to the working directory); the name loads it (absolute).
        model_id, former = f"py:{portable_path(path)}:{func}", f"py:{path.resolve()}:{func}"
        extra = {"former_ids": [former]} if former != model_id else {}
        ref = ModelRef(model_id=model_id, source="py", name=f"{path.resolve()}:{func}", extra=extra)
        return [self.maybe_random(ref, random_init)]

    def build(self, ref: ModelRef) -> nn.Module:
        path, func_name = _split(ref.name)
        module_name = f"_pans_user_{abs(hash(str(path)))}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise ModelLoadError(f"py:{ref.name}: cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            reason = f"{type(exc).__name__}: {one_line(exc)}"
            raise ModelLoadError(f"py:{ref.name}: importing {path.name} failed: {reason}") from exc
        factory = getattr(module, func_name, None)
        if not callable(factory):
            raise ModelLoadError(f"py:{ref.name}: {path.name} has no function {func_name!r}")
        try:
            model = factory()
        except Exception as exc:
            raise ModelLoadError(f"py:{ref.name}: {func_name}() raised {type(exc).__name__}: {one_line(exc)}") from exc
        import torch.nn as nn

        if not isinstance(model, nn.Module):
            raise ModelLoadError(f"py:{ref.name}: {func_name}() returned {type(model).__name__}, not a torch nn.Module")
        return model

    def info(self, ref: ModelRef) -> ModelInfo:
        model = self.build_on_meta(ref)
        return ModelInfo(
            architecture=type(model).__name__, preprocess=Preprocess.from_cfg(getattr(model, "pretrained_cfg", None))
        )

    def build_on_meta(self, ref: ModelRef) -> nn.Module:
        import torch

        with torch.device("meta"):
            return self.build(ref)

    def downloads(self, ref: ModelRef) -> bool:
        return False  # a file on a path every node sees

    def fetch(self, ref: ModelRef) -> dict[str, Any]:
        path, _ = _split(ref.name)
        return {"revision": None, "path": str(path), "sha256": sha256_file(path)}

    def load(self, ref: ModelRef, fetched: dict[str, Any] | None = None) -> LoadedModel:
        fetched = fetched or self.fetch(ref)
        model = self.build(ref)
        cfg = getattr(model, "pretrained_cfg", None)
        labels = cfg.get("label_names") if isinstance(cfg, dict) else getattr(cfg, "label_names", None)
        return LoadedModel(
            ref=ref,
            model=model,
            preprocess=Preprocess.from_cfg(cfg),
            architecture=type(model).__name__,
            weights_sha256=fetched.get("sha256"),
            class_names=[str(n) for n in labels] if isinstance(labels, (list, tuple)) else None,
        )
