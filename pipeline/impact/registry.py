"""Impact experiments, registered like probes and sources: one module, one ``@register_experiment``.

An experiment is a function ``run(ctx)`` that measures something on the shared
:class:`~pipeline.impact.experiments.ImpactRun` (the intact model's logits, its PANs, their
matched controls and the ablation means are computed once for all experiments) and records rows
there. Its registration declares everything else about it:

- ``options``: :class:`Option` s, which become ``--flags`` of ``pans impact`` and ``pans survey
  --impact``, fields of :class:`~pipeline.impact.settings.ImpactSettings` and part of ``impact_id``;
- ``check``: rejects bad option values (an :class:`~pipeline.impact.errors.ImpactError`, one line);
- ``tables``: the tables it writes besides ``impact``, with their schema when the table is new
  (added to :data:`pipeline.schema.TABLES`, so stores, ``pans query`` and ``compact`` know it);
- ``report``: its panel in the report's impact section (HTML pieces, see
  :class:`analysis.report.impact.ImpactView`).

Experiments run in registration order, which is the import order at the bottom of this module:
adding one is its module plus one import line there (docs/extending.md). This module and the
experiment modules import nothing heavy at the top (torch is imported inside ``run``), so the
command line builds its options from here without loading PyTorch.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipeline.registry import Registry

if TYPE_CHECKING:
    import pyarrow as pa


@dataclass(frozen=True)
class Option:
    """One setting of an experiment: ``--NAME`` on the command line, ``ImpactSettings.NAME`` in Python.

    ``help`` may say ``{default}``; ``type`` parses the command-line text (an argparse ``type``).
    """

    name: str
    default: Any
    help: str
    type: Callable[[str], Any] | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def add_to(self, group: argparse._ActionsContainer) -> None:
        shown = ",".join(self.default) if isinstance(self.default, tuple) else self.default
        kwargs: dict[str, Any] = {"default": self.default, "help": self.help.format(default=shown)}
        if self.type is not None:
            kwargs["type"] = self.type
        group.add_argument(self.flag, **kwargs)


#: Draws an experiment's part of the report's impact section: HTML pieces (possibly none).
ReportPanel = Callable[[Any], list[str]]


@dataclass(frozen=True)
class Experiment:
    name: str
    run: Callable[[Any], None]
    options: tuple[Option, ...] = ()
    check: Callable[[Mapping[str, Any]], None] | None = None
    tables: Mapping[str, pa.Schema | None] = field(default_factory=dict)
    report: ReportPanel | None = None


EXPERIMENTS: Registry[Experiment] = Registry("impact experiment")

#: Fields of ImpactSettings that belong to no experiment (an option may not reuse these names).
CORE_FIELDS = ("images", "labels", "max_images", "seed", "batch_size", "device")


def register_experiment(
    name: str,
    *,
    options: tuple[Option, ...] = (),
    check: Callable[[Mapping[str, Any]], None] | None = None,
    tables: Mapping[str, pa.Schema | None] | None = None,
    report: ReportPanel | None = None,
) -> Callable[[Callable[[Any], None]], Callable[[Any], None]]:
    """Register ``run`` as the impact experiment ``name`` (see the module docstring for the parts).

    ``tables`` maps each table the experiment writes (besides ``impact``) to its schema, or to
    None for a table :mod:`pipeline.schema` already defines.
    """

    def decorator(run: Callable[[Any], None]) -> Callable[[Any], None]:
        taken = set(CORE_FIELDS) | {o.name for o in all_options()}
        clash = [o.name for o in options if o.name in taken]
        if clash:
            raise ValueError(f"impact experiment {name!r}: option(s) {clash} are already defined")
        if tables:
            from pipeline.schema import register_table

            for table, schema in tables.items():
                if schema is not None:
                    register_table(table, schema)
        EXPERIMENTS.register(name)(Experiment(name, run, tuple(options), check, dict(tables or {}), report))
        return run

    return decorator


def experiments() -> list[Experiment]:
    """The registered experiments in run order."""
    return EXPERIMENTS.values()


def all_options() -> list[Option]:
    return [option for experiment in experiments() for option in experiment.options]


def option_defaults() -> dict[str, Any]:
    return {option.name: option.default for option in all_options()}


def check_options(values: Mapping[str, Any]) -> None:
    """Run every experiment's check on ``values`` (raises ImpactError on the first bad one)."""
    for experiment in experiments():
        if experiment.check is not None:
            experiment.check(values)


def output_tables() -> tuple[str, ...]:
    """Every table an impact run writes, ``impact`` last (it marks a model's impact as done)."""
    names = dict.fromkeys(table for experiment in experiments() for table in experiment.tables)
    names.pop("impact", None)
    return (*names, "impact")


# One import per experiment module (each registers itself); this order is the run order.
from pipeline.impact import ablation_experiment, padding_experiment, border_experiment  # noqa: E402,F401,I001
