"""The survey: many models on Ray, per-neuron results in Parquet, resumable.

Orchestration only: it calls the sources (resolve, fetch), the runner (detect) and the store
(write); it never computes a statistic. ``driver`` runs the loop, ``tasks`` holds the Ray
tasks, ``starts`` where they mark their start, ``plan`` resolves a fresh driver's specs on a
worker, ``runtime`` starts or joins Ray,
``progress`` draws the bar, ``records`` holds the options, per-model records and summary they
share (the command prints the summary). Imports are lazy: the driver reaches Ray's start
without torch (tests/test_cli_imports.py).
"""

from __future__ import annotations

from typing import Any

__all__ = ["ModelRecord", "SurveyOptions", "SurveySummary", "run_survey"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        if name == "run_survey":
            from pipeline.survey import driver as home
        else:
            from pipeline.survey import records as home
        return getattr(home, name)
    raise AttributeError(name)
