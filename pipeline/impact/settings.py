"""Settings of the impact experiments: recorded with their results, hashed into ``impact_id``.

The image set, seed and speed knobs are fields of every run; the rest are the options of the
registered experiments (:mod:`pipeline.impact.registry`), read as attributes too
(``settings.controls``) and hashed into ``impact_id`` under their own names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pipeline.impact.registry import CORE_FIELDS, check_options, option_defaults
from pipeline.settings import Settings, config_id

#: Bump when a change to the impact code can change a stored number.
IMPACT_VERSION = "1.0"


@dataclass(frozen=True, init=False)
class ImpactSettings(Settings):
    images: str  # photos | PATH to a folder of images
    labels: str | None  # labels file (PATH<TAB>LABEL lines), paths relative to the images folder
    max_images: int  # photos: this many views; folders: a seeded sample of at most this many
    seed: int
    batch_size: int
    device: str
    options: tuple[tuple[str, Any], ...]  # every registered experiment's options, by name

    VERSION: ClassVar[tuple[str, str]] = ("impact_version", IMPACT_VERSION)

    def __init__(
        self,
        images: str = "photos",
        labels: str | None = None,
        max_images: int = 64,
        seed: int = 0,
        batch_size: int = 32,
        device: str = "auto",
        **options: Any,
    ) -> None:
        values = option_defaults()
        unknown = sorted(set(options) - set(values))
        if unknown:
            raise TypeError(f"unknown impact option(s) {unknown} (known: {', '.join(values)})")
        values.update(options)
        check_options(values)
        for name, value in zip(CORE_FIELDS, (images, labels, max_images, seed, batch_size, device), strict=True):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "options", tuple(values.items()))

    def __getattr__(self, name: str) -> Any:  # an experiment's option, e.g. settings.controls
        for key, value in self.__dict__.get("options", ()):
            if key == name:
                return value
        raise AttributeError(f"{type(self).__name__!r} has no attribute {name!r}")

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The run's fields, then every registered experiment's options."""
        return (*CORE_FIELDS, *option_defaults())

    def with_absolute_paths(self) -> ImpactSettings:
        """The same settings with the image folder and labels file as absolute paths
        (what is recorded, and what workers on other nodes or in other directories must read)."""
        changes = {
            name: str(Path(value).expanduser().resolve())
            for name in ("images", "labels")
            if (value := getattr(self, name)) and value != "photos"
        }
        return self.updated(**changes)

    def prepared(self) -> ImpactSettings:
        """These settings for the workers: paths made absolute, the image set checked once, here.

        A missing, empty or unreadable image set (or labels file) is the same for every model, so it is
        a one-line error before a survey starts rather than a failure row per model. Labels naming
        classes a model does not have are checked per model (an ``impact`` failure).
        """
        from pipeline.impact.images import load_image_set
        from pipeline.sources.base import Preprocess

        prepared = self.with_absolute_paths()
        load_image_set(prepared.images, Preprocess(input_size=(3, 32, 32)), labels=prepared.labels,
                       max_images=prepared.max_images, seed=prepared.seed)
        return prepared

    def recorded(self) -> ImpactSettings:
        return self.with_absolute_paths()

    @property
    def impact_id(self) -> str:
        return self.settings_id()


def impact_key(model_id: str, cfg_id: str, impact_id: str) -> str:
    """File key of a model's impact tables: detection config and impact settings both in the name."""
    from pipeline.store import file_key

    return file_key(model_id, f"{cfg_id}-{impact_id}")


def run_config_id(detect: Any, impact: ImpactSettings | None) -> str:
    """The config id of a run (its ``runs`` row): the detection config id, or with impact experiments
    a hash of both settings, so a run with ``--impact`` is told apart and one without keeps its id."""
    if impact is None:
        return detect.config_id
    return config_id({"detect": detect.result_settings(), "impact": impact.result_settings()})


def impact_run_config(detect: Any, impact: ImpactSettings) -> dict[str, Any]:
    """What a run with impact experiments adds to its ``runs`` config (``pans impact`` and ``survey --impact``)."""
    return {
        "impact": impact.result_settings(),
        "impact_settings": impact.to_dict(),
        "detect_config_id": detect.config_id,
        "impact_id": impact.impact_id,
    }
