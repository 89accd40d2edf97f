"""The survey: many models on Ray, per-neuron results in Parquet, resumable.

Orchestration only: it calls the sources (resolve, fetch), the runner (detect) and the store
(write); it never computes a statistic. ``driver`` runs the loop, ``tasks`` holds the Ray
tasks, ``runtime`` starts or joins Ray, ``progress`` draws the bar and the summary.
"""

from pipeline.survey.driver import ModelRecord, SurveyOptions, SurveySummary, run_survey

__all__ = ["ModelRecord", "SurveyOptions", "SurveySummary", "run_survey"]
