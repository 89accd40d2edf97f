"""Options shared by the commands that detect (``detect``, ``survey``, ``impact``)."""

from __future__ import annotations

import argparse

from pipeline.options import positive_float, positive_int
from pipeline.settings import DEFAULT_TAU, DetectSettings


def add_detect_options(parser: argparse.ArgumentParser) -> None:
    d = DetectSettings()
    g = parser.add_argument_group("detection")
    g.add_argument(
        "--probe",
        default=d.probe,
        help="photos (default: sample photos shipped with scikit-image), noise, mean, or a folder of images",
    )
    g.add_argument(
        "--num-images", type=positive_int, default=d.num_images, help=f"probe images (default {d.num_images})"
    )
    g.add_argument(
        "--image-size", type=positive_int, default=None, help="square input size (default: the model's pretrained size)"
    )
    g.add_argument(
        "--batch-size",
        type=positive_int,
        default=d.batch_size,
        help=f"images per forward pass (default {d.batch_size})",
    )
    g.add_argument("--device", default=d.device, help="auto (default), cpu, cuda or cuda:N")
    g.add_argument(
        "--tau", type=positive_float, default=DEFAULT_TAU, help=f"PAN threshold on max |own_z| (default {DEFAULT_TAU})"
    )
    g.add_argument(
        "--reference",
        choices=("replicate", "mean"),
        default=d.reference,
        help="neutral padding that own_z is measured against (default replicate)",
    )
    g.add_argument("--seed", type=int, default=d.seed, help="seed for probe crops and noise (default 0)")
    g.add_argument(
        "--random-init",
        action="store_true",
        help="random weights instead of pretrained ones (labelled untrained; normalisation recalibrated on the probe)",
    )
    g.add_argument(
        "--no-null",
        dest="null",
        action="store_false",
        help="skip the null twin (the same architecture untrained, recalibrated on the probe; docs/calibration.md)",
    )
    g.add_argument(
        "--offline",
        action="store_true",
        help="use the local caches only and fail at once on a miss (same as HF_HUB_OFFLINE=1)",
    )


def settings_from_args(args: argparse.Namespace) -> DetectSettings:
    """The detection settings of a parsed command line.

    ``--offline`` takes effect here (it is a property of the process, not of the results): it sets
    HF_HUB_OFFLINE=1 before any model is resolved, and Ray workers inherit or are sent it.
    """
    if getattr(args, "offline", False):
        from pipeline.sources import set_offline

        set_offline(True)
    return DetectSettings.from_args(args)
