"""Impact experiments: what PANs (and zero padding) do to a model's predictions. See docs/impact.md.

``run_impact`` (``experiments``) is the entry point, used by ``pans impact`` and by the survey's
``--impact``: it runs every experiment registered in ``registry`` (one module each:
``ablation_experiment``, ``padding_experiment``, ``border_experiment``, each with its options,
tables and report panel). The other modules each do one job: ``ablation`` (clamping conv
channels), ``controls`` (which neurons), ``padding_swap`` (the padding counterfactual),
``border_distance`` (patches pasted across a canvas), ``images`` (the image set and labels),
``metrics`` and ``settings``. The report's impact section is ``analysis/report/impact.py``.
"""

from pipeline.impact.errors import ImageSetError, ImpactError, LabelsError
from pipeline.impact.settings import ImpactSettings, impact_key

__all__ = ["ImageSetError", "ImpactError", "ImpactSettings", "LabelsError", "impact_key", "run_impact"]


def __getattr__(name: str):
    if name == "run_impact":  # imported lazily: it pulls in torch and the detector
        from pipeline.impact.experiments import run_impact

        return run_impact
    raise AttributeError(name)
