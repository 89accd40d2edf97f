"""Settings: what a run used, stored beside its results and hashed into the ids that name them.

:class:`Settings` is the one way for every kind of settings (detection here, the impact
experiments' in :mod:`pipeline.impact.settings`) to be built from a parsed command line, changed,
recorded and hashed: a kind lists its fields and its version, nothing else.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from pipeline.options import FromArgs
from pipeline.version import DETECTOR_VERSION

#: Default PAN threshold on max_s |own_z|; see docs/calibration.md for how it was chosen.
DEFAULT_TAU = 3.5


def config_id(settings: dict[str, Any]) -> str:
    """A short stable hash of the settings that change results (not speed knobs like batch size)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class Settings(FromArgs):
    """What every kind of settings shares: built from arguments (``from_args``), updated, recorded
    and hashed, all by field name."""

    #: Settings that change speed or placement, never the numbers: left out of the ids.
    SPEED_ONLY: ClassVar[frozenset[str]] = frozenset({"batch_size", "device"})
    #: The code version recorded with (and hashed into) the result settings: (key, version).
    VERSION: ClassVar[tuple[str, str]]

    def to_dict(self) -> dict[str, Any]:
        """Every setting by name (what the constructor takes back)."""
        return {name: getattr(self, name) for name in self.field_names()}

    def updated(self, **changes: Any) -> Self:
        """These settings with ``changes`` (unknown names and None values ignored)."""
        current = self.to_dict()
        return type(self)(**{**current, **{k: v for k, v in changes.items() if k in current and v is not None}})

    def recorded(self) -> Settings:
        """The settings as recorded and hashed (impact settings make their paths absolute)."""
        return self

    def result_settings(self) -> dict[str, Any]:
        """The settings that determine the stored numbers, plus the code version."""
        out = {k: v for k, v in self.recorded().to_dict().items() if k not in self.SPEED_ONLY}
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}
        key, version = self.VERSION
        out[key] = version
        return out

    def settings_id(self) -> str:
        """The hash of :meth:`result_settings` (``config_id`` of detection, ``impact_id`` of impact)."""
        return config_id(self.result_settings())


#: How a null twin's statistics are fitted to the probe (pipeline/null_twin.py); stored with the run's
#: settings (provenance). Kept here, not there, so that a config id needs no torch.
RECALIBRATION = (
    "running-stats: the probe's statistics (one batch: in the detection pass itself; else cumulative "
    "average over train-mode passes); else LSUV unit variance"
)
#: Bumped when the twin's construction or recalibration changes the numbers
#: (2: a --random-init model is fitted exactly as its twin is, by :func:`fitted_to_probe`;
#: 3: default-init draws a model's own init overwrites are skipped, pipeline/sources/overwritten_fills.py,
#: so the random stream, and with it every random-init weight, moves).
NULL_VERSION = "3"


def twin_beside(device_type: str, threads: int) -> bool:
    """Whether a trained model's null twin is measured beside it, in a second thread, each with half the
    torch threads (pipeline/null_twin.py, :class:`MeasuredBeside`): on a CPU with two or more threads.
    The one rule for the runner (which asks torch) and the survey's memory estimate (which counts a
    second set of activations then, from a task's CPUs)."""
    return device_type == "cpu" and threads >= 2


def null_settings() -> dict[str, Any]:
    """The twin's settings as they go into a run's stored config (and its config id)."""
    from pipeline.sources import INIT_SEED

    return {"seed": INIT_SEED, "recalibration": RECALIBRATION, "version": NULL_VERSION}


@dataclass(frozen=True)
class DetectSettings(Settings):
    probe: str = "photos"  # photos | noise | mean | PATH to an image folder
    num_images: int = 16
    image_size: int | None = None  # None: the model's pretrained input size
    batch_size: int = 16
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    tau: float = DEFAULT_TAU
    reference: str = "replicate"  # reference padding for own_z: replicate | mean
    seed: int = 0
    null: bool = True  # also measure the null twin (pipeline/null_twin.py); --no-null turns it off

    VERSION: ClassVar[tuple[str, str]] = ("detector_version", DETECTOR_VERSION)

    def result_settings(self) -> dict[str, Any]:
        """The settings that determine the stored numbers, with the detector version and how the null
        twin (and a --random-init model, which is one) is built and recalibrated."""
        return {**super().result_settings(), "null_twin": null_settings()}

    @property
    def config_id(self) -> str:
        return self.settings_id()

    def check(self, *, embedded: bool) -> None:
        """What is wrong for every model, as one error before a survey starts (not a failure row per model).

        The probe (a folder must be readable at the same path on every node, as on a shared volume)
        and the device: fully on an ``embedded`` runtime (this machine is the cluster), by syntax
        only when joining a cluster (its nodes may have GPUs this driver lacks).
        """
        from pipeline.probes import check_probe

        check_probe(self.probe)
        if self.device in ("auto", "cpu"):  # valid anywhere: no torch import (a survey starts Ray meanwhile)
            return
        from pipeline.detect.core import check_device, resolve_device

        if embedded:
            resolve_device(self.device)
        else:
            check_device(self.device)
