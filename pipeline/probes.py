"""Probe images: what the model sees while we measure it. Every probe is recorded with results.

- ``photos``: natural photographs that ship inside scikit-image's wheel (no download, no dataset).
- a folder path: real images (for a survey, an ImageNet validation subset), read recursively.
- ``noise``: Gaussian noise in normalised space; ``mean``: the model's mean image (all zeros
  after normalisation), optionally with a little noise so the interior is not constant.

All are resized and centre-cropped to the model's input size with its interpolation and crop
ratio, then normalised with its mean/std (:class:`pipeline.sources.Preprocess`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.errors import ProbeError
from pipeline.registry import Registry
from pipeline.sources.base import Preprocess

if TYPE_CHECKING:  # imported where a probe is made: checking a probe's name or folder needs no torch
    import torch

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}

#: Photographs in scikit-image's package data (checked to ship inside the wheel).
SKIMAGE_PHOTOS = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "hubble_deep_field.jpg",
    "camera.png",
    "coins.png",
    "moon.png",
    "grass.png",
    "gravel.png",
    "brick.png",
    "retina.jpg",
)

ProbeFactory = Callable[[int, Preprocess, int], "torch.Tensor"]
PROBES: Registry[ProbeFactory] = Registry("probe")

_INTERP = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


def normalise(batch: torch.Tensor, pp: Preprocess) -> torch.Tensor:
    import torch

    mean = torch.tensor(pp.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(pp.std, dtype=torch.float32).view(1, -1, 1, 1)
    return (batch - mean) / std


def _to_tensor(
    img: Image.Image, pp: Preprocess, crop_box: tuple[float, float, float, float] | None = None
) -> torch.Tensor:
    """Resize (shorter side to size / crop_pct), centre-crop to the input size, to [0, 1] CHW."""
    import torch

    channels, h, w = pp.input_size
    img = img.convert("RGB" if channels == 3 else "L")
    if crop_box is not None:  # a sub-window, for more distinct views of few photos
        W, H = img.size
        img = img.crop((int(crop_box[0] * W), int(crop_box[1] * H), int(crop_box[2] * W), int(crop_box[3] * H)))
    scale_to = max(h, w) / max(pp.crop_pct, 1e-6)
    W, H = img.size
    ratio = scale_to / min(W, H)
    img = img.resize(
        (max(w, round(W * ratio)), max(h, round(H * ratio))), _INTERP.get(pp.interpolation, Image.Resampling.BILINEAR)
    )
    W, H = img.size
    left, top = (W - w) // 2, (H - h) // 2
    img = img.crop((left, top, left + w, top + h))
    arr = np.asarray(img, dtype=np.float32) / 255.0
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def _views(paths: list[Path], n: int, pp: Preprocess, seed: int) -> torch.Tensor:
    """``n`` images from ``paths``: each whole image first, then seeded crops and flips."""
    import torch

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        path = paths[i % len(paths)]
        try:
            with Image.open(path) as img:
                img.load()
                if i < len(paths):
                    tensor = _to_tensor(img, pp)
                else:
                    size = rng.uniform(0.5, 0.9)
                    x0, y0 = rng.uniform(0, 1 - size, size=2)
                    tensor = _to_tensor(img, pp, (x0, y0, x0 + size, y0 + size))
                    if rng.random() < 0.5:
                        tensor = tensor.flip(-1)
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise ProbeError(f"cannot read image {path}: {exc}") from exc
        out.append(tensor)
    return normalise(torch.stack(out), pp)


@PROBES.register("photos")
def photo_probe(n: int, pp: Preprocess, seed: int) -> torch.Tensor:
    import skimage

    root = Path(skimage.__file__).parent / "data"
    paths = [root / name for name in SKIMAGE_PHOTOS if (root / name).is_file()]
    if not paths:
        raise ProbeError(f"scikit-image ships no sample photos in {root}; use --probe PATH or noise")
    return _views(paths, n, pp, seed)


@PROBES.register("noise")
def noise_probe(n: int, pp: Preprocess, seed: int) -> torch.Tensor:
    import torch

    gen = torch.Generator().manual_seed(seed)
    return torch.randn((n, *pp.input_size), generator=gen)


@PROBES.register("mean")
def mean_probe(n: int, pp: Preprocess, seed: int) -> torch.Tensor:
    """The mean image plus faint noise (std 0.05 in normalised units) so no neuron is constant."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    return 0.05 * torch.randn((n, *pp.input_size), generator=gen)


def folder_images(path: Path) -> list[Path]:
    if not path.exists():
        raise ProbeError(f"probe folder {path} does not exist")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ProbeError(f"probe folder {path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def check_probe(spec: str) -> list[Path] | None:
    """Fail now on a probe that cannot work: an unknown name, a missing folder, one with no images.

    Returns the image files of a folder probe (None for a named probe). A survey calls this on
    the driver, before any model is fetched: a mistyped path is one error, not 500 failure rows.
    """
    if spec in PROBES:
        return None
    path = Path(spec).expanduser()
    if not path.exists() and ("/" not in spec and "." not in spec):
        raise ProbeError(f"unknown probe {spec!r}: use {', '.join(PROBES.names())} or a folder of images")
    return folder_images(path)


def make_probe(spec: str, num_images: int, preprocess: Preprocess, seed: int = 0) -> torch.Tensor:
    """A normalised probe batch (N, C, H, W) for ``spec``: a registered probe name or a folder."""
    if num_images < 1:
        raise ProbeError(f"number of probe images must be at least 1, got {num_images}")
    files = check_probe(spec)
    if files is None:
        return PROBES.get(spec)(num_images, preprocess, seed)
    return _views(files, num_images, preprocess, seed)


def probe_label(spec: str) -> str:
    """How a probe is recorded in results: named probes as is, folders as absolute paths."""
    return spec if spec in PROBES else f"folder:{Path(spec).expanduser().resolve()}"
