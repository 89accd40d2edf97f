"""Models saved in timm's export layout (``config.json`` + ``model.safetensors``), from a folder or the hub.

timm would download ``config.json`` and the weights itself for ``hf-hub:`` names; we read the
config we fetched and hand timm the exact weight file we verified, so what loads is what we hashed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import ModelLoadError, one_line
from pipeline.sources.base import LoadedModel, ModelInfo, ModelRef, Preprocess

if TYPE_CHECKING:
    import torch.nn as nn


def read_config(path: str | Path, label: str) -> dict[str, Any]:
    try:
        config = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{label}: unreadable config.json: {exc}") from exc
    if not isinstance(config, dict):
        raise ModelLoadError(f"{label}: config.json is not a JSON object")
    return config


def parse_config(config: dict[str, Any], label: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """``(architecture, pretrained_cfg, model_args)`` as timm reads them, checked against timm's registry."""
    import timm
    from timm.models._hub import _parse_model_cfg  # timm's own parser, so we read configs exactly as it does

    try:
        pretrained_cfg, arch, model_args = _parse_model_cfg(json.loads(json.dumps(config)), {})
    except (KeyError, TypeError) as exc:
        raise ModelLoadError(f"{label}: config.json is not a timm model config ({exc})") from exc
    if not arch or not timm.is_model(arch):
        raise ModelLoadError(f"{label}: config.json names no architecture timm knows ({arch!r})")
    return arch, dict(pretrained_cfg), dict(model_args or {})


def export_info(config: dict[str, Any], label: str, weights: str | None = None) -> ModelInfo:
    arch, cfg, _ = parse_config(config, label)
    return ModelInfo(
        architecture=arch,
        preprocess=Preprocess.from_cfg(cfg),
        pretrained_tag=cfg.get("tag"),
        license=cfg.get("license"),
        weights=weights,
    )


def build_from_export(config: dict[str, Any], label: str, weights: str | Path | None) -> nn.Module:
    """Create the model; with ``weights``, load exactly that file (safetensors, or torch.load weights_only)."""
    import timm

    arch, cfg, model_args = parse_config(config, label)
    kwargs: dict[str, Any] = dict(model_args)
    if model_args:
        kwargs["pretrained_model_args"] = dict(model_args)
    cfg.pop("source", None)
    cfg.pop("hf_hub_id", None)
    if weights is not None:
        cfg["file"] = str(weights)
    try:
        return timm.create_model(arch, pretrained=weights is not None, pretrained_cfg=cfg, **kwargs)
    except Exception as exc:  # timm raises RuntimeError/KeyError/SafetensorError for weights that do not fit
        raise ModelLoadError(f"{label}: weights do not fit {arch}: {type(exc).__name__}: {one_line(exc)}") from exc


def load_export(ref: ModelRef, config_path: str | Path, label: str, fetched: dict[str, Any]) -> LoadedModel:
    """Build a timm export (``config.json`` + weights) and record where it came from.

    ``fetched`` is the source's fetch record: ``path`` of the weight file (None: random init),
    ``revision`` and ``sha256``. Shared by every source whose models are timm exports.
    """
    config = read_config(config_path, label)
    model = build_from_export(config, label, fetched.get("path") if ref.pretrained else None)
    info = export_info(config, label)
    return LoadedModel(
        ref=ref,
        model=model,
        preprocess=info.preprocess,
        architecture=info.architecture,
        pretrained_tag=info.pretrained_tag if ref.pretrained else None,
        revision=fetched.get("revision"),
        weights_sha256=fetched.get("sha256"),
        license=info.license,
        class_names=config.get("label_names"),
    )
