"""The image set the impact experiments compare predictions on, with labels when there are any.

- ``photos``: the sample photographs the probe uses (no labels).
- a folder of images: unlabelled, or an ImageFolder layout (one sub-folder per class, named by
  class index, class name, or ImageNet synset id such as ``n01440764``), or any folder plus a
  labels file.
- a labels file: one ``RELATIVE/PATH<TAB or comma>LABEL`` per line (``#`` comments and blank lines
  skipped); LABEL is a class index, a class name, or a synset id. The listed files are the set.

Images are prepared exactly like the probe (:mod:`pipeline.probes`): resized, centre-cropped and
normalised with the model's own settings.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.errors import ProbeError
from pipeline.impact.errors import ImageSetError, LabelsError
from pipeline.probes import IMAGE_SUFFIXES, _views, folder_images, make_probe
from pipeline.sources.base import Preprocess

_SYNSET = re.compile(r"^n\d{8}$")


@dataclass
class ImageSet:
    """Normalised images plus raw label strings (resolved to class indices once the model's classes are known)."""

    images: torch.Tensor
    label_names: list[str] | None
    source: str  # "photos" or "folder:/abs/path"

    def __len__(self) -> int:
        return int(self.images.shape[0])


def load_image_set(spec: str, preprocess: Preprocess, *, labels: str | None = None, max_images: int = 64,
                   seed: int = 0) -> ImageSet:
    """Read the image set named by ``spec`` (``photos`` or a folder), at most ``max_images`` (a seeded sample)."""
    if max_images < 1:
        raise ImageSetError(f"--max-images must be at least 1, got {max_images}")
    if spec == "photos":
        if labels:
            raise LabelsError("--labels needs --images FOLDER (the sample photos have no labels)")
        return ImageSet(_wrap(lambda: make_probe("photos", max_images, preprocess, seed)), None, "photos")
    root = Path(spec).expanduser()
    if not root.is_dir():
        raise ImageSetError(f"--images {spec}: not a folder (use photos or a folder of images)")
    if labels:
        pairs = _read_labels_file(Path(labels).expanduser(), root)
    else:
        files = _wrap(lambda: folder_images(root))
        pairs = _image_folder_pairs(root, files)
    pairs = _sample(pairs, max_images, seed)
    images = _wrap(lambda: _views([p for p, _ in pairs], len(pairs), preprocess, seed))
    names = [label for _, label in pairs]
    return ImageSet(images, None if any(n is None for n in names) else names, f"folder:{root.resolve()}")


def _wrap(load):
    """Image reading errors from the probe module, re-raised as image-set errors."""
    try:
        return load()
    except ProbeError as exc:
        raise ImageSetError(str(exc).replace("probe folder", "image folder")) from exc


def _sample(pairs: list[tuple[Path, str | None]], limit: int, seed: int) -> list[tuple[Path, str | None]]:
    if len(pairs) <= limit:
        return pairs
    chosen = sorted(random.Random(seed).sample(range(len(pairs)), limit))
    return [pairs[i] for i in chosen]


def _image_folder_pairs(root: Path, files: list[Path]) -> list[tuple[Path, str | None]]:
    """ImageFolder layout when every image sits in a direct sub-folder of ``root``; else unlabelled."""
    parents = {f.parent for f in files}
    if all(p.parent == root for p in parents):
        return [(f, f.parent.name) for f in files]
    return [(f, None) for f in files]


def _read_labels_file(path: Path, root: Path) -> list[tuple[Path, str | None]]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise LabelsError(f"cannot read labels file {path}: {exc.strerror or exc}") from exc
    pairs: list[tuple[Path, str | None]] = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = re.split(r"\t|,", line, maxsplit=1) if ("\t" in line or "," in line) else line.rsplit(None, 1)
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            raise LabelsError(f"{path}:{number}: expected 'PATH<TAB>LABEL', got {line!r}")
        file = root / parts[0].strip()
        if not file.is_file():
            raise LabelsError(f"{path}:{number}: no image {file}")
        if file.suffix.lower() not in IMAGE_SUFFIXES:
            raise LabelsError(f"{path}:{number}: {file.name} is not an image ({', '.join(sorted(IMAGE_SUFFIXES))})")
        pairs.append((file, parts[1].strip()))
    if not pairs:
        raise LabelsError(f"labels file {path} lists no images")
    return pairs


def model_class_names(class_names: list[str] | None, num_classes: int) -> list[str] | None:
    """The model's class names; ImageNet's (timm's ``ImageNetInfo``) for 1000-class models without their own."""
    if class_names and len(class_names) == num_classes:
        return list(class_names)
    if num_classes == 1000:
        from timm.data import ImageNetInfo

        info = ImageNetInfo()
        return [info.index_to_description(i) for i in range(1000)]
    return None


def _norm(name: str) -> str:
    return re.sub(r"[\s_-]+", " ", name.strip().lower())


def resolve_labels(label_names: list[str], num_classes: int, class_names: list[str] | None) -> torch.Tensor:
    """Raw labels -> class indices; a label naming no class of the model is a :class:`LabelsError`."""
    lookup: dict[str, int] = {}
    if class_names:
        for i, name in enumerate(class_names):
            lookup.setdefault(_norm(name), i)
            lookup.setdefault(_norm(name.split(",")[0]), i)  # "tench, Tinca tinca" -> "tench"
    synsets: dict[str, int] = {}
    if num_classes == 1000:
        from timm.data import ImageNetInfo

        synsets = {s: i for i, s in enumerate(ImageNetInfo().label_names())}
    out, unknown = [], []
    for label in label_names:
        if label.isdigit() and int(label) < num_classes:
            out.append(int(label))
        elif _SYNSET.match(label) and label in synsets:
            out.append(synsets[label])
        elif _norm(label) in lookup:
            out.append(lookup[_norm(label)])
        else:
            out.append(-1)
            unknown.append(label)
    if unknown:
        shown = ", ".join(sorted(set(unknown))[:5])
        if class_names and len(class_names) <= 10:
            hint = f"class names ({', '.join(class_names)}) or indices 0-{num_classes - 1}"
        elif class_names:
            hint = f"class names or indices 0-{num_classes - 1}"
        else:
            hint = f"class indices 0-{num_classes - 1} (the model has no class names)"
        if num_classes == 1000:
            hint += " or ImageNet synset ids"
        raise LabelsError(f"{len(set(unknown))} label(s) name no class of the model ({num_classes} classes): "
                          f"{shown}; use {hint}")
    return torch.tensor(out, dtype=torch.long)
