"""What a survey is told and what it returns: options, one record per model, the summary, the counts.

Plain data shared by the driver, the progress display and the ``pans survey`` command; it imports
nothing of the survey, so none of them import each other for their types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import PanSurveyError
from pipeline.options import FromArgs, gpu_share_problem


@dataclass(frozen=True)
class SurveyOptions(FromArgs):
    """How a survey runs (placement, limits, retries); none of it changes a stored number."""

    address: str | None = None  # None: embedded runtime (or RAY_ADDRESS when set)
    gpus_per_model: float | None = None  # None: DEFAULT_GPU_SHARE when the cluster has GPUs, else 0
    cpus_per_model: float = 1.0
    max_downloads: int = 4
    timeout_per_model: float | None = None  # seconds of detect time before the task is cancelled
    #: Seconds from submitting a detect task until it must have reported its start (a task that hangs
    #: before it starts, or whose start is lost, is still cancelled); None: 3 x timeout_per_model.
    start_timeout: float | None = None
    max_retries: int = 3  # re-runs of a task whose worker or node died (out-of-memory kills: at most one)
    random_init: bool = False
    progress: str = "auto"  # auto | bar | lines | off
    num_cpus: int | None = None  # size of an embedded runtime (default: the machine)
    memory_budget_gb: float | None = None  # embedded runtime's memory resource (None: $PANS_SURVEY_MEMORY_GB)
    wait_for_nodes: float | None = None  # seconds to wait for nodes that can run a task (None: see feasibility.py)

    def check(self) -> None:
        """Options no survey can run with: one error before anything starts."""
        if self.max_downloads < 1:
            raise PanSurveyError("--max-downloads must be at least 1")
        share = self.gpus_per_model
        if share is not None and (problem := gpu_share_problem(share)):
            raise PanSurveyError(f"--gpus-per-model {share:g}: {problem}")

    @property
    def embedded(self) -> bool:
        """True when the survey starts its own Ray runtime here (no --address, no RAY_ADDRESS)."""
        import os

        return self.address is None and not os.environ.get("RAY_ADDRESS")


@dataclass
class ModelRecord:
    """What happened to one model in this run (returned to callers; the store has the data)."""

    model_id: str
    key: str
    status: str  # done | failed | skipped
    stage: str | None = None
    error_type: str | None = None
    message: str | None = None
    attempts: int = 0
    fetch_node: str | None = None
    detect_node: str | None = None
    device: str | None = None
    fetch_seconds: float = 0.0
    task_seconds: float = 0.0
    pans: int = 0
    padded_neurons: int = 0
    details: str | None = None  # the log file holding this failure's full text, when there is one


@dataclass
class SurveySummary:
    run_id: str
    config_id: str
    out: Path
    requested: int
    skipped: int
    wall_seconds: float
    models: list[ModelRecord] = field(default_factory=list)
    folder_models: int = 0  # models with results in the folder under this config (all runs)
    folder_pans: int = 0
    impact_id: str | None = None  # with --impact: the impact settings' id (see pipeline/impact/settings.py)
    log: Path | None = None  # DIR/logs/survey-RUN.log: Ray's own output and full error texts

    @property
    def done(self) -> int:
        return sum(r.status == "done" for r in self.models)

    @property
    def failed(self) -> int:
        return sum(r.status == "failed" for r in self.models)

    @property
    def pans(self) -> int:
        return sum(r.pans for r in self.models if r.status == "done")

    @property
    def padded_neurons(self) -> int:
        return sum(r.padded_neurons for r in self.models if r.status == "done")


@dataclass
class Counts:
    """The progress display's tallies while the loop runs."""

    total: int
    done: int = 0
    failed: int = 0
    running: int = 0
    waiting: str | None = None  # what the survey waits for ("waiting for GPU nodes ..., 0:42"), if anything

    @property
    def finished(self) -> int:
        return self.done + self.failed
