"""A tiny CNN that the tests train themselves, on a task where the answer is closeness to the border.

The task: a bright square somewhere on a 24x24 image; the label says whether the square lies
*near* the border (class 1, at most 1 px away) or *far* from it (class 0, at least 6 px away).
The network ends in global average pooling, so apart from its padding it is translation
invariant: the only way to tell near from far is to see where the zero padding is.

The three input channels play separate parts, as the planes of a multi-channel sensor would:
0 holds the square on a canvas at the mean (0 after normalisation, like the padding), 1 is a
constant plane with faint noise (an "alpha" or validity mask), 2 is pure noise. The first
convolution is grouped (one group per input channel) and the only zero-padded layer; conv2 and
conv3 pad circularly (the map wraps around: no constant border value, so no PANs can form there,
and the detector measures them without counting PANs). The constant border is thus visible only
to conv1's filters, those of the constant plane most, and training makes some of them into
strong Padding Aware Neurons. Ablating those costs the model its accuracy; ablating as many
other neurons of the same layer costs much less. This is the separation the impact tests check.

``train_border_cnn`` takes a few seconds on 2 idle CPU cores and is deterministic for a seed.
The module carries a timm-style ``pretrained_cfg`` (input size, mean, std), so
``py:tests/toy_models.py:trained_border_cnn`` works as a model spec for the CLI.
"""

from __future__ import annotations

from functools import cache

import torch
import torch.nn as nn
import torch.nn.functional as F

IMAGE_SIZE = 24
PATCH = 4
NEAR = 1  # a square exactly this many pixels from the nearest border is "near"
FAR_MIN = 6  # ... and at least this many pixels from every border is "far"
CLASS_NAMES = ["far", "near"]
GROUP_WIDTH = 8  # first-layer filters per input channel
DROPOUT = 0.3
W2 = 64  # width of the two deeper layers
#: The seed the tests train with. The PAN-versus-control separation was checked on seeds 0-5: it is
#: clear on 1-5; on seed 0 several random controls also drop the accuracy to chance.
DEFAULT_SEED = 1

# Per-channel statistics in normalised units: (canvas level, noise std).
SQUARE = (2.0, 0.0, 1.5)
CHANNELS = ((0.0, 0.0), (1.0, 0.05), (0.0, 0.0))
#: Normalisation the model expects (pixels in [0, 1] -> normalised), for images written to disk.
MEAN, STD = 0.5, 0.25


class BorderCNN(nn.Module):
    """Grouped zero-padded 3x3 conv, two circular-padded stride-2 convs, global average pooling, a linear head."""

    def __init__(self, group_width: int = GROUP_WIDTH) -> None:
        super().__init__()
        width = 3 * group_width
        self.conv1 = nn.Conv2d(3, width, 3, padding=1, groups=3)
        self.conv2 = nn.Conv2d(width, W2, 3, stride=2, padding=1, padding_mode="circular")
        self.conv3 = nn.Conv2d(W2, W2, 3, stride=2, padding=1, padding_mode="circular")
        self.head = nn.Linear(W2, len(CLASS_NAMES))
        self.drop = nn.Dropout2d(DROPOUT)  # training only: spreads the work over redundant filters
        self.pretrained_cfg = {"input_size": (3, IMAGE_SIZE, IMAGE_SIZE), "mean": (MEAN,) * 3, "std": (STD,) * 3,
                               "crop_pct": 1.0, "interpolation": "bilinear",
                               "label_names": list(CLASS_NAMES)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(F.relu(self.conv1(x)))
        x = self.drop(F.relu(self.conv2(x)))
        x = F.relu(self.conv3(x))
        return self.head(x.mean(dim=(2, 3)))


def _distance_to_border(top: int, left: int, size: int, patch: int) -> int:
    far_edge = size - patch
    return min(top, left, far_edge - top, far_edge - left)


def border_task(
    n: int, *, seed: int = 0, size: int = IMAGE_SIZE, patch: int = PATCH
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` normalised images (n, 3, size, size) and labels (1 = near the border, 0 = far), balanced."""
    g = torch.Generator().manual_seed(seed)
    levels = torch.tensor([c[0] for c in CHANNELS]).view(1, 3, 1, 1)
    noise = torch.tensor([c[1] for c in CHANNELS]).view(1, 3, 1, 1)
    images = levels + noise * torch.randn(n, 3, size, size, generator=g)
    labels = (torch.arange(n) % 2)[torch.randperm(n, generator=g)]
    far_edge = size - patch
    for i in range(n):
        while True:  # rejection sampling: cheap, both regions are large
            top, left = (int(v) for v in torch.randint(0, far_edge + 1, (2,), generator=g))
            d = _distance_to_border(top, left, size, patch)
            if (labels[i] == 1 and d == NEAR) or (labels[i] == 0 and d >= FAR_MIN):
                break
        for c, value in enumerate(SQUARE):
            if value:
                images[i, c, top : top + patch, left : left + patch] = value
    return images, labels


def to_pixels(images: torch.Tensor) -> torch.Tensor:
    """Normalised images -> [0, 1] pixels (what a PNG holds), the inverse of the model's normalisation."""
    return (images * STD + MEAN).clamp(0, 1)


def train_border_cnn(seed: int = DEFAULT_SEED, steps: int = 300, batch_size: int = 64) -> BorderCNN:
    """Train a :class:`BorderCNN` on :func:`border_task`; returns it in eval mode.

    Trains on one thread: the model is tiny, so more threads only add overhead, and on a busy
    machine two threads fighting for the cores made training 10-50x slower. One thread also makes
    the trained weights independent of the machine's core count.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        model = BorderCNN()
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
    finally:
        torch.set_num_threads(threads)
    return model.eval()


@cache
def _cached_state(seed: int, steps: int) -> dict[str, torch.Tensor]:
    return train_border_cnn(seed=seed, steps=steps).state_dict()


def trained_border_cnn(seed: int = DEFAULT_SEED, steps: int = 300) -> BorderCNN:
    """A trained toy model (trained once per process and seed, then copied): a ``py:`` spec target."""
    model = BorderCNN()
    model.load_state_dict(_cached_state(seed, steps))
    return model.eval()


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(images).argmax(1) == labels).float().mean())
