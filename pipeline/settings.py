"""Detection settings: what a run used, stored beside its results."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from pipeline.store import config_id
from pipeline.version import DETECTOR_VERSION

#: Default PAN threshold on max_s |own_z|; see docs/calibration.md for how it was chosen.
DEFAULT_TAU = 3.0

#: Settings that change speed or placement, never the numbers: left out of the config id.
_SPEED_ONLY = {"batch_size", "device"}


@dataclass(frozen=True)
class DetectSettings:
    probe: str = "photos"  # photos | noise | mean | PATH to an image folder
    num_images: int = 16
    image_size: int | None = None  # None: the model's pretrained input size
    batch_size: int = 16
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    tau: float = DEFAULT_TAU
    reference: str = "replicate"  # reference padding for own_z: replicate | mean
    seed: int = 0
    null: bool = True  # also measure the null twin (pipeline/null_twin.py); --no-null turns it off

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def result_settings(self) -> dict[str, Any]:
        """The settings that determine the stored numbers (plus the detector version)."""
        out = {k: v for k, v in asdict(self).items() if k not in _SPEED_ONLY}
        out["detector_version"] = DETECTOR_VERSION
        # How the null twin (and a --random-init model, which is one) is built and recalibrated.
        from pipeline.null_twin import null_settings

        out["null_twin"] = null_settings()
        return out

    @property
    def config_id(self) -> str:
        return config_id(self.result_settings())

    def updated(self, **changes: Any) -> DetectSettings:
        known = {f.name for f in fields(self)}
        return replace(self, **{k: v for k, v in changes.items() if k in known and v is not None})
