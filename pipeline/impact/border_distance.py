"""Border distance: the same object patch pasted across a neutral canvas, confidence against distance.

The canvas is all zeros in normalised space, i.e. every pixel the dataset's mean colour. Each
patch is the centre square of an image of the set; its class is what the intact model predicts
for it pasted in the middle of the canvas. The patch is then pasted on a grid of positions and
the confidence in that class is recorded against the distance (pixels) from the patch to the
nearest image border, for the intact model and the ablated one. A model that uses border
position shows a curve that is not flat; PANs' part in it is the gap between the two curves.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import torch
import torch.nn.functional as F

#: Runs a batch of normalised images through one condition and returns its logits.
Predict = Callable[[torch.Tensor], torch.Tensor]


def patches_from(images: torch.Tensor, count: int, frac: float) -> torch.Tensor:
    """The centre squares (side ``frac`` of the image's shorter side) of the first ``count`` images."""
    h, w = images.shape[-2:]
    side = max(1, round(min(h, w) * frac))
    top, left = (h - side) // 2, (w - side) // 2
    return images[:count, :, top : top + side, left : left + side].clone()


def positions(h: int, w: int, side: int, grid: int) -> list[tuple[int, int]]:
    """A ``grid`` x ``grid`` lattice of top-left corners spanning the canvas, corners included."""
    ys = torch.linspace(0, h - side, grid).round().long().tolist()
    xs = torch.linspace(0, w - side, grid).round().long().tolist()
    return sorted({(y, x) for y in ys for x in xs})


def paste(patch: torch.Tensor, h: int, w: int, where: list[tuple[int, int]]) -> torch.Tensor:
    side = patch.shape[-1]
    canvas = torch.zeros(len(where), patch.shape[0], h, w, dtype=patch.dtype)
    for i, (y, x) in enumerate(where):
        canvas[i, :, y : y + side, x : x + side] = patch
    return canvas


def border_curves(
    patches: torch.Tensor, size: tuple[int, int], grid: int, conditions: dict[str, Predict], reference: str
) -> list[dict]:
    """Rows (condition, distance_px, distance_frac, samples, confidence, confidence_std, hit_rate).

    ``reference`` names the condition that decides each patch's class (the intact model).
    """
    h, w = size
    side = patches.shape[-1]
    where = positions(h, w, side, grid)
    dist = [min(y, x, h - side - y, w - side - x) for y, x in where]
    max_dist = max(max(dist), 1)
    centre = [((h - side) // 2, (w - side) // 2)]
    stats: dict[tuple[str, int], list[tuple[float, float]]] = defaultdict(list)
    for patch in patches:
        cls = int(conditions[reference](paste(patch, h, w, centre)).argmax(1)[0])
        batch = paste(patch, h, w, where)
        for name, predict in conditions.items():
            probs = F.softmax(predict(batch).double(), dim=1)
            conf = probs[:, cls]
            hit = (probs.argmax(1) == cls).double()
            for d, c, t in zip(dist, conf.tolist(), hit.tolist(), strict=True):
                stats[(name, d)].append((c, t))
    rows = []
    for (name, d), values in sorted(stats.items()):
        conf = torch.tensor([v[0] for v in values], dtype=torch.float64)
        rows.append({
            "condition": name,
            "distance_px": d,
            "distance_frac": d / max_dist,
            "samples": len(values),
            "confidence": float(conf.mean()),
            "confidence_std": float(conf.std()) if len(values) > 1 else 0.0,
            "hit_rate": sum(v[1] for v in values) / len(values),
        })
    return rows


def edge_minus_centre(rows: list[dict], condition: str) -> float | None:
    """Mean confidence at the smallest distance minus at the largest: the curve's summary in one number."""
    mine = [r for r in rows if r["condition"] == condition]
    if len(mine) < 2:
        return None
    near = min(mine, key=lambda r: r["distance_px"])
    far = max(mine, key=lambda r: r["distance_px"])
    return near["confidence"] - far["confidence"]
