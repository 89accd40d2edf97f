"""Settings of the impact experiments: recorded with their results, hashed into ``impact_id``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from pipeline.impact.errors import ImpactError
from pipeline.impact.padding import MODES
from pipeline.store import config_id, file_key

#: Bump when a change to the impact code can change a stored number.
IMPACT_VERSION = "1.0"

_SPEED_ONLY = {"batch_size", "device"}


@dataclass(frozen=True)
class ImpactSettings:
    images: str = "photos"  # photos | PATH to a folder of images
    labels: str | None = None  # labels file (PATH<TAB>LABEL lines), paths relative to the images folder
    max_images: int = 64  # photos: this many views; folders: a seeded sample of at most this many
    controls: int = 5  # seeds of matched random-neuron controls
    seed: int = 0
    padding_modes: tuple[str, ...] = MODES
    border_patches: int = 4  # patches for the border-distance curve (0: skip it)
    border_grid: int = 7  # positions per axis
    patch_frac: float = 0.4  # patch side as a share of the image side
    batch_size: int = 32
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.controls < 0:
            raise ImpactError(f"--controls must be 0 or more, got {self.controls}")
        bad = [m for m in self.padding_modes if m not in MODES]
        if bad:
            raise ImpactError(f"unknown padding mode(s) {bad} (use {', '.join(MODES)})")
        if not 0 < self.patch_frac < 1:
            raise ImpactError(f"patch fraction must be between 0 and 1, got {self.patch_frac}")
        if self.border_grid < 2:
            raise ImpactError(f"border grid must be at least 2, got {self.border_grid}")

    def with_absolute_paths(self) -> ImpactSettings:
        """The same settings with the image folder and labels file as absolute paths
        (what is recorded, and what workers on other nodes or in other directories must read)."""
        changes = {
            name: str(Path(value).expanduser().resolve())
            for name in ("images", "labels")
            if (value := getattr(self, name)) and value != "photos"
        }
        return replace(self, **changes)

    def result_settings(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self.with_absolute_paths()).items() if k not in _SPEED_ONLY}
        out["padding_modes"] = list(self.padding_modes)
        out["impact_version"] = IMPACT_VERSION
        return out

    @property
    def impact_id(self) -> str:
        return config_id(self.result_settings())

    def updated(self, **changes: Any) -> ImpactSettings:
        known = {f.name for f in fields(self)}
        return replace(self, **{k: v for k, v in changes.items() if k in known and v is not None})


def impact_key(model_id: str, cfg_id: str, impact_id: str) -> str:
    """File key of a model's impact tables: detection config and impact settings both in the name."""
    return file_key(model_id, f"{cfg_id}-{impact_id}")


def run_config_id(detect: Any, impact: ImpactSettings | None) -> str:
    """The config id of a run (its ``runs`` row): the detection config id, or with impact experiments
    a hash of both settings, so a run with ``--impact`` is told apart and one without keeps its id."""
    if impact is None:
        return detect.config_id
    return config_id({"detect": detect.result_settings(), "impact": impact.result_settings()})
