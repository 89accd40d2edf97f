"""Errors of the impact experiments the user can fix (one line in the CLI, exit 2)."""

from __future__ import annotations

from pipeline.errors import PanSurveyError


class ImpactError(PanSurveyError):
    """An impact experiment cannot run on the given model, neurons table or options."""


class ImageSetError(ImpactError):
    """The image set is missing, empty or unreadable."""


class LabelsError(ImpactError):
    """A labels file (or an ImageFolder layout) names classes the model does not have, or is malformed."""
