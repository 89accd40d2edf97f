"""A tiny CNN that the tests train themselves, on a task where the answer is closeness to the border.

The task: a bright square on a grey, noisy canvas; the label says whether the square lies *near*
the border (class 1) or *far* from it (class 0). The network ends in global average pooling, so
apart from its padding it is translation invariant: the only way it can tell near from far is to
see where the zero padding is. Training therefore grows real Padding Aware Neurons, and ablating
them should cost accuracy, which is what the impact tests check.

``train_border_cnn`` takes a few seconds on 2 CPU cores and is deterministic for a given seed.
The module carries a timm-style ``pretrained_cfg`` (input size, mean 0, std 1), so
``py:tests/toy_models.py:trained_border_cnn`` works as a model spec for the CLI.
"""

from __future__ import annotations

from functools import cache

import torch
import torch.nn as nn
import torch.nn.functional as F

IMAGE_SIZE = 24
PATCH = 4
NEAR_MAX = 1  # a square at most this many pixels from a border is "near"
FAR_MIN = 6  # ... and at least this many pixels from every border is "far"
CLASS_NAMES = ["far", "near"]
WIDTH = 16
PADS = (1, 1, 1)
STRIDE3 = 2
STRIDE2 = 2
CANVAS, CONTRAST, NOISE = 0.5, 0.5, 0.08  # grey noisy canvas, a brighter square
MEAN, STD = 0.5, 0.25  # normalisation the model expects


class BorderCNN(nn.Module):
    """Three zero-padded 3x3 convolutions, global average pooling, a linear head."""

    def __init__(self, width: int = WIDTH) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=PADS[0])
        self.conv2 = nn.Conv2d(width, 2 * width, 3, stride=STRIDE2, padding=PADS[1])
        self.conv3 = nn.Conv2d(2 * width, 2 * width, 3, stride=STRIDE3, padding=PADS[2])
        self.head = nn.Linear(2 * width, len(CLASS_NAMES))
        self.pretrained_cfg = {"input_size": (3, IMAGE_SIZE, IMAGE_SIZE), "mean": (MEAN,) * 3, "std": (STD,) * 3,
                               "crop_pct": 1.0, "interpolation": "bilinear"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.relu(self.conv3(x))
        return self.head(x.mean(dim=(2, 3)))


def _distance_to_border(top: torch.Tensor, left: torch.Tensor, size: int, patch: int) -> torch.Tensor:
    far_edge = size - patch
    return torch.minimum(torch.minimum(top, left), torch.minimum(far_edge - top, far_edge - left))


def border_task_pixels(
    n: int, *, seed: int = 0, size: int | None = None, patch: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images (n, 3, size, size) in [0, 1] and labels (1 = near the border, 0 = far), balanced."""
    size = size or IMAGE_SIZE
    patch = patch or PATCH
    g = torch.Generator().manual_seed(seed)
    images = CANVAS + NOISE * torch.randn(n, 1, size, size, generator=g)
    labels = torch.arange(n) % 2
    labels = labels[torch.randperm(n, generator=g)]
    far_edge = size - patch
    tops = torch.empty(n, dtype=torch.long)
    lefts = torch.empty(n, dtype=torch.long)
    for i in range(n):
        while True:  # rejection sampling: cheap, the valid regions are large
            top, left = torch.randint(0, far_edge + 1, (2,), generator=g)
            d = int(_distance_to_border(top, left, size, patch))
            if (labels[i] == 1 and d <= NEAR_MAX) or (labels[i] == 0 and d >= FAR_MIN):
                break
        tops[i], lefts[i] = top, left
        images[i, :, top : top + patch, left : left + patch] = CANVAS + CONTRAST
    images = images.clamp(0, 1).expand(n, 3, size, size).contiguous()
    return images, labels


def border_task(
    n: int, *, seed: int = 0, size: int | None = None, patch: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Like :func:`border_task_pixels`, normalised the way the model expects (what it is fed)."""
    pixels, labels = border_task_pixels(n, seed=seed, size=size, patch=patch)
    return (pixels - MEAN) / STD, labels


def train_border_cnn(seed: int = 0, steps: int = 300, batch_size: int = 64, width: int = WIDTH) -> BorderCNN:
    """Train a :class:`BorderCNN` on :func:`border_task`; returns it in eval mode."""
    torch.manual_seed(seed)
    model = BorderCNN(width)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    images, labels = border_task(batch_size * 16, seed=seed + 1000)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(images), (batch_size,), generator=g)
        loss = F.cross_entropy(model(images[idx]), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@cache
def _cached_state(seed: int, steps: int) -> dict[str, torch.Tensor]:
    return train_border_cnn(seed=seed, steps=steps).state_dict()


def trained_border_cnn(seed: int = 0, steps: int = 300) -> BorderCNN:
    """A trained toy model (trained once per process and seed, then copied): a ``py:`` spec target."""
    model = BorderCNN()
    model.load_state_dict(_cached_state(seed, steps))
    return model.eval()


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(images).argmax(1) == labels).float().mean())
