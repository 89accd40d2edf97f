"""Small ``py:`` factories for the survey tests: a plain CNN and models that misbehave on purpose.

Each one is a real ``nn.Module`` the real detector runs; the misbehaviour is in its forward pass
(the way a real model fails), not a mock of the pipeline.
"""

from __future__ import annotations

import time

import torch
import torch.nn as nn


def tiny_cnn() -> nn.Module:
    """Three padded 3x3 convolutions: every output channel reads padding."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 4, 3, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    model.pretrained_cfg = {"input_size": (3, 32, 32)}
    return model


def mlp() -> nn.Module:
    """No convolution at all (a non-CNN): the survey records it, it is not an error."""
    model = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(48, 10))
    model.pretrained_cfg = {"input_size": (3, 32, 32)}
    return model


class _Hangs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "meta":  # (the survey's memory estimate runs it on the meta device)
            time.sleep(3600)  # a model stuck in its forward pass (a deadlock, a pathological kernel)
        return self.conv(x)


def hangs() -> nn.Module:
    model = _Hangs()
    model.pretrained_cfg = {"input_size": (3, 32, 32)}
    return model


class _NeedsSmallBatches(nn.Module):
    """Raises the CUDA out-of-memory error for batches above ``limit`` images, as a GPU would."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > self.limit:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {x.shape[0]} images")
        return self.conv(x)


def oom_unless_small_batch() -> nn.Module:
    """Fits with batches of 2: the survey's retry with half the batch must succeed."""
    model = _NeedsSmallBatches(limit=2)
    model.pretrained_cfg = {"input_size": (3, 32, 32)}
    return model


def always_oom() -> nn.Module:
    """Never fits: retried once, then a failure record."""
    model = _NeedsSmallBatches(limit=0)
    model.pretrained_cfg = {"input_size": (3, 32, 32)}
    return model


def broken() -> nn.Module:
    raise RuntimeError("checkpoint does not match the architecture")


class _Slow(nn.Module):
    """Sleeps ``PANS_TEST_SLOW_SECONDS`` per forward pass (0 when unset): a model that is still
    running when a test kills the survey."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import os

        if x.device.type != "meta":  # (the survey's memory estimate runs it on the meta device)
            time.sleep(float(os.environ.get("PANS_TEST_SLOW_SECONDS", "0")))
        return self.conv(x)


def slow_cnn() -> nn.Module:
    model = _Slow()
    model.pretrained_cfg = {"input_size": (3, 32, 32)}
    return model


class _WideHead(nn.Module):
    """A padded convolution and a wide linear head: ``features`` x 1024 weights (4 bytes each).

    Each forward pass appends ``NAME START END`` to ``$PANS_TEST_TRACE`` (when set) and sleeps
    ``PANS_TEST_SLOW_SECONDS``, so a test can tell whether two models ran at the same time.
    """

    def __init__(self, name: str, features: int) -> None:
        super().__init__()
        self.name = name
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(8)
        self.fc = nn.Linear(1024, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import os

        start = time.time()
        if x.device.type != "meta":  # the survey's memory estimate runs it on the meta device
            time.sleep(float(os.environ.get("PANS_TEST_SLOW_SECONDS", "0")))
        y = self.fc(self.pool(self.conv(x)).flatten(1))
        trace = os.environ.get("PANS_TEST_TRACE")
        if trace and x.device.type != "meta":
            with open(trace, "a") as f:
                f.write(f"{self.name} {start} {time.time()}\n")
        return y


def _wide(name: str, features: int) -> nn.Module:
    model = _WideHead(name, features)
    model.pretrained_cfg = {"input_size": (3, 32, 32)}
    return model


def mid_a() -> nn.Module:
    """~67 MB of weights (16.8 M parameters): ~0.14 GB at random init; two do not fit a 0.25 GB budget, one does."""
    return _wide("mid_a", 16384)


def mid_b() -> nn.Module:
    return _wide("mid_b", 16384)


def huge_head() -> nn.Module:
    """~270 MB of weights (67 M parameters): ~0.35 GB at random init, more than a 0.25 GB budget holds."""
    return _wide("huge_head", 65536)


def stem_then_padding() -> nn.Module:
    """A 16x16 stride-16 stem, then padded convolutions: at 32 px they see 2x2 maps, all padding."""
    model = nn.Sequential(
        nn.Conv2d(3, 8, 16, stride=16),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    model.pretrained_cfg = {"input_size": (3, 32, 32)}
    return model
