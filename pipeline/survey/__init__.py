"""The survey: many models on Ray, per-neuron results in Parquet, resumable.

Orchestration only: it calls the sources (resolve, fetch), the runner (detect) and the store
(write); it never computes a statistic. ``driver`` runs the loop, ``tasks`` holds the Ray
tasks, ``board`` the actor they report their start to, ``runtime`` starts or joins Ray,
``progress`` draws the bar and the summary. Imports are lazy: Ray workers that only need
``board`` must not pay for torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ModelRecord", "SurveyOptions", "SurveySummary", "run_survey"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from pipeline.survey import driver

        return getattr(driver, name)
    raise AttributeError(name)
