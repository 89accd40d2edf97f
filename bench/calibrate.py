"""Reproducible calibration of the PAN threshold tau (see docs/calibration.md).

For each architecture, trained weights against the same architecture freshly initialised
(two seeds), on the default probe (16 scikit-image photos at the model's input size), and the
toy CNN the tests train (tests/toy_models.py) against its initialisation, on its task's images: the
distribution of max_s |own_z| over live neurons, and how many neurons pass each threshold.
Trained weights come from ../shared/models (skipped when absent).

    python bench/calibrate.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import timm
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.detect import detect_pans  # noqa: E402
from pipeline.probes import make_probe  # noqa: E402
from pipeline.sources import Preprocess, load_model  # noqa: E402
from tests.reference_models import ResNet20, load_resnet20  # noqa: E402
from tests.toy_models import BorderCNN, border_task, train_border_cnn  # noqa: E402

SHARED = ROOT.parent / "shared" / "models"
THRESHOLDS = (2, 3, 5, 10, 20)


def row(name: str, model: torch.nn.Module, pp: Preprocess | torch.Tensor) -> None:
    """One line of the table; ``pp`` is the model's preprocessing (photos probe) or a probe batch."""
    x = pp if isinstance(pp, torch.Tensor) else make_probe("photos", 16, pp)
    res = detect_pans(model, x, tau=3.0)
    t = res.neurons
    live = ~np.array(t.column("dead").to_pylist())
    z = np.array([v if v is not None else np.nan for v in t.column("max_abs_own_z").to_pylist()])[live]
    q = np.nanpercentile(z, [50, 90, 99])
    counts = "  ".join(f"{int((z >= th).sum()):5d}" for th in THRESHOLDS)
    share = 100 * float((z >= 3).sum()) / len(z)
    print(f"{name:34s} {len(z):6d}  {q[0]:5.2f} {q[1]:5.2f} {q[2]:6.2f} {np.nanmax(z):7.1f}   {counts}   {share:5.2f}%")


def main() -> None:
    head = f"{'model':34s} {'live':>6s}  {'p50':>5s} {'p90':>5s} {'p99':>6s} {'max':>7s}   "
    print(head + "  ".join(f">={t:<3d}" for t in THRESHOLDS) + "   share>=3")
    if SHARED.is_dir():
        pp = Preprocess.from_cfg(ResNet20.pretrained_cfg)
        row("cifar10_resnet20 trained", load_resnet20(SHARED, True), pp)
        for seed in (0, 1):
            torch.manual_seed(seed)
            row(f"cifar10_resnet20 init seed {seed}", load_resnet20(SHARED, False), pp)
        lite = load_model(f"local-dir:{SHARED / 'tf_efficientnet_lite0.in1k'}")
        row("tf_efficientnet_lite0 trained", lite.model, lite.preprocess)
        for seed in (0, 1):
            torch.manual_seed(seed)
            row(f"tf_efficientnet_lite0 init seed {seed}", timm.create_model("tf_efficientnet_lite0"), lite.preprocess)
    else:
        print(f"({SHARED} absent: no trained weights to calibrate against)")
    # The toy CNN the tests train (tests/toy_models.py), on its own task's images.
    probe, _ = border_task(64, seed=7)
    for seed in (1, 2, 3):
        row(f"toy border CNN trained seed {seed}", train_border_cnn(seed=seed), probe)
        torch.manual_seed(seed)
        row(f"toy border CNN init seed {seed}", BorderCNN().eval(), probe)


if __name__ == "__main__":
    main()
