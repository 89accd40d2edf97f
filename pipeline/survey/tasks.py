"""The two Ray tasks of a survey: fetch a model's weights, then detect its PANs (and, with
``--impact``, run the impact experiments on the same loaded model and its just-detected neurons).

Both tasks return plain data (outcomes) instead of raising for a model's own problems, so a
bad model becomes a failure record and never a Ray retry; Ray's ``max_retries`` is kept for
what it is for: a worker or node that died. The detect task returns the small per-neuron
Arrow tables; it never writes files (the driver does, so no two processes write one file),
and weights never travel through the object store (each task reads the node's hub cache).
"""

from __future__ import annotations

import gc
import time
import traceback
from dataclasses import dataclass, field, replace
from typing import Any

import ray

from pipeline.errors import ModelLoadError, PanSurveyError, UnknownModelError, one_line
from pipeline.settings import DetectSettings
from pipeline.sources import ModelRef
from pipeline.survey.gpu_memory import cap_gpu_memory
from pipeline.survey.starts import mark_started
from pipeline.survey.warmup import import_detector


@dataclass
class TaskError:
    """A model's failure as data: which stage, what kind of error, what it said."""

    stage: str  # fetch | load | detect | impact
    error_type: str
    message: str
    oom: bool = False

    @classmethod
    def from_exception(cls, stage: str, exc: BaseException) -> TaskError:
        message = one_line(exc, 2000, first_line_only=True)
        return cls(stage=stage, error_type=type(exc).__name__, message=message, oom=is_oom(exc))


@dataclass
class FetchOutcome:
    key: str
    node_id: str
    seconds: float
    error: TaskError | None = None
    fetched: dict[str, Any] = field(default_factory=dict)  # the source's record: paths, revision, sha256


@dataclass
class DetectOutcome:
    key: str
    node_id: str
    device: str
    seconds: float  # wall time inside the task (load + probe + detect, + impact)
    tables: dict[str, Any] | None = None  # neurons, layers, models (pyarrow Tables)
    error: TaskError | None = None
    #: With ``--impact``: the impact, impact_classes and impact_border tables, or why they are missing
    #: (the detection ``tables`` are there either way).
    impact_tables: dict[str, Any] | None = None
    impact_error: TaskError | None = None


def is_oom(exc: BaseException) -> bool:
    """CUDA (or host allocator) out-of-memory, whatever wrapper it comes in."""
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or ("out of memory" in text and isinstance(exc, RuntimeError))


def node_id() -> str:
    return ray.get_runtime_context().get_node_id()


def fetch_into_node_cache(ref: ModelRef) -> dict[str, Any]:
    """Download ``ref``'s weights into this node's hub cache without building the model.

    Returns the source's fetch record (``revision``, ``path``, ``sha256``, ``size``; empty for
    sources with nothing to download: random init, ``py:``, ``local-dir:``).
    """
    from pipeline.sources import fetch

    return fetch(ref) or {}


def usable_here(fetched: dict[str, Any]) -> bool:
    """True when every file a fetch record points at is on this node (shared cache, same node).

    Downloads count only in this node's own cache: see :mod:`pipeline.sources.node_cache`.
    """
    from pipeline.sources.node_cache import usable_on_this_node

    paths = [v for k, v in fetched.items() if k == "path" or k.endswith("_path")]
    return all(isinstance(v, str) and usable_on_this_node(v) for v in paths)


def _fetch(key: str, ref: ModelRef) -> FetchOutcome:
    started = time.perf_counter()
    try:
        fetched = fetch_into_node_cache(ref)
    except Exception as exc:
        return FetchOutcome(key, node_id(), time.perf_counter() - started, TaskError.from_exception("fetch", exc))
    return FetchOutcome(key, node_id(), time.perf_counter() - started, fetched=fetched)


def pick_device(requested: str) -> str:
    """``auto`` means CUDA only when Ray gave this task a GPU and torch can see one, else CPU.

    A task without a GPU share never touches a GPU even on a GPU node (it would oversubscribe
    it), and a logical GPU without CUDA (tests, misconfigured nodes) falls back to the CPU.
    """
    if requested != "auto":
        return requested
    import torch

    return "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"


def _detect(
    key: str,
    ref: ModelRef,
    settings: DetectSettings,
    run_id: str,
    attempt: int,
    fetched: dict[str, Any] | None = None,
    impact: Any = None,
    measure_null: bool = True,
) -> DetectOutcome:
    # A fresh worker imports torch, timm and the detector first (seconds on a small machine):
    # that is start-up, not this model's time, so the clock starts after it.
    import_detector()

    from pipeline.runner import detect_loaded
    from pipeline.sources import load_model

    mark_started(run_id, key, attempt)
    started = time.perf_counter()
    device = "cpu"
    stage = "fetch"
    try:
        # The fetch task's files are here when the cache is shared or it ran on this node;
        # otherwise fetch again on this node (pinned to the same commit when there was one).
        if fetched and not usable_here(fetched):
            pinned = replace(ref, revision=fetched["revision"]) if fetched.get("revision") else ref
            fetched = fetch_into_node_cache(pinned)
        stage = "load"
        t0 = time.perf_counter()
        loaded = load_model(ref, fetched=fetched or None)
        load_seconds = time.perf_counter() - t0
        stage = "detect"
        device = pick_device(settings.device)
        cap_gpu_memory(device)  # a fractional GPU share is a memory limit too
        tables = detect_loaded(
            loaded,
            settings.updated(device=device),
            load_seconds=load_seconds,
            run_id=run_id,
            fetched=fetched or None,
            measure_null=measure_null,
        )
        outcome = DetectOutcome(key, node_id(), device, time.perf_counter() - started, tables=tables)
        if impact is not None:
            try:
                outcome.impact_tables = _impact(loaded, tables["neurons"], settings, impact, device)
            except Exception as exc:  # the detection stands; the driver records the impact failure
                outcome.impact_error = _task_error("impact", exc)
            outcome.seconds = time.perf_counter() - started
        return outcome
    except Exception as exc:
        if stage == "detect" and isinstance(exc, ModelLoadError | UnknownModelError):
            stage = "load"
        return DetectOutcome(key, node_id(), device, time.perf_counter() - started, error=_task_error(stage, exc))
    finally:
        _release_memory()


def _impact(loaded: Any, neurons: Any, settings: DetectSettings, impact: Any, device: str) -> dict[str, Any]:
    """The impact experiments on the model the detect task has loaded (same device and batch size)."""
    from pipeline.impact.experiments import run_impact

    impact = impact.updated(device=device, batch_size=settings.batch_size)
    return run_impact(loaded, neurons, impact, detect=settings.updated(device=device))


def _task_error(stage: str, exc: BaseException) -> TaskError:
    error = TaskError.from_exception(stage, exc)
    if not isinstance(exc, PanSurveyError):
        # Unexpected errors keep their last frame: enough to find the bug from a failure row.
        frame = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
        if frame:
            error.message += f" (at {frame[0].filename.rsplit('/', 1)[-1]}:{frame[0].lineno})"
    return error


def _release_memory() -> None:
    """Workers are reused across models: drop the last model before the next one arrives."""
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover
        pass


#: Fetches are I/O: they take no CPU slot (the driver bounds them with --max-downloads), so
#: downloads overlap detection instead of competing with it for cores.
fetch_task = ray.remote(num_cpus=0, max_retries=3)(_fetch)

#: Resources (num_cpus, num_gpus) are set per call with ``.options``.
detect_task = ray.remote(max_retries=3)(_detect)
