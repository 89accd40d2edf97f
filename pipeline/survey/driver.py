"""The survey driver: resolve specs, skip what is done, keep fetch and detect tasks flowing, write.

The driver is the only writer of the results folder. Each model goes
pending -> fetching (CPU task, at most ``max_downloads`` at once) -> detecting (GPU share or
CPU task, placed on the node that fetched when it has room) -> written or failed. Failures are
data: they become rows of ``failures`` and the survey goes on. Resume is by
``(model_id, config_id)``: a rerun skips every model whose ``models`` row exists.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from pipeline.compact import recover
from pipeline.errors import PanSurveyError
from pipeline.settings import DetectSettings
from pipeline.sources import ModelRef
from pipeline.store import ResultStore, file_key, new_run_id, run_record
from pipeline.survey.progress import Counts, Progress, make_progress

#: How often the driver wakes up when nothing finishes (to check timeouts, refresh the bar).
POLL_SECONDS = 0.25


@dataclass(frozen=True)
class SurveyOptions:
    """How a survey runs (placement, limits, retries); none of it changes a stored number."""

    address: str | None = None  # None: embedded runtime (or RAY_ADDRESS when set)
    gpus_per_model: float | None = None  # None: DEFAULT_GPU_SHARE when the cluster has GPUs, else 0
    cpus_per_model: float = 1.0
    max_downloads: int = 4
    timeout_per_model: float | None = None  # seconds of detect time before the task is cancelled
    max_retries: int = 3  # Ray re-runs of a task whose worker or node died
    random_init: bool = False
    progress: str = "auto"  # auto | bar | lines | off
    num_cpus: int | None = None  # size of an embedded runtime (default: the machine)


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
class _Job:
    ref: ModelRef
    key: str
    settings: DetectSettings
    gpus: float
    attempt: int = 1
    fetch_node: str | None = None
    fetch_seconds: float = 0.0
    fetched: dict[str, Any] = field(default_factory=dict)
    started: float | None = None  # driver clock when the detect task reported its start


def resolve_all(specs: Iterable[str], random_init: bool) -> tuple[list[ModelRef], list[tuple[str, BaseException]]]:
    """Resolve each spec on its own, so one broken spec is a failure record, not a dead survey."""
    from pipeline.sources import resolve_spec

    refs: dict[str, ModelRef] = {}
    broken: list[tuple[str, BaseException]] = []
    for spec in specs:
        try:
            for ref in resolve_spec(spec, random_init=random_init):
                refs.setdefault(ref.model_id, ref)
        except Exception as exc:
            broken.append((spec, exc))
    return list(refs.values()), broken


class Survey:
    """One run of the survey loop over a list of refs (see :func:`run_survey`)."""

    def __init__(
        self,
        store: ResultStore,
        settings: DetectSettings,
        options: SurveyOptions,
        run_id: str,
        progress: Progress,
        on_event: Callable[[str, ModelRecord], None] | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.options = options
        self.run_id = run_id
        self.progress = progress
        self.on_event = on_event
        self.records: list[ModelRecord] = []

    # -- bookkeeping -------------------------------------------------------------------------

    def _fail(self, job: _Job, stage: str, error_type: str, message: str, node: str | None = None) -> None:
        self.store.write_failure(
            job.key,
            model_id=job.ref.model_id,
            config_id=self.settings.config_id,
            run_id=self.run_id,
            stage=stage,
            error_type=error_type,
            message=message,
            attempt=job.attempt,
        )
        rec = ModelRecord(
            job.ref.model_id,
            job.key,
            "failed",
            stage,
            error_type,
            message,
            job.attempt,
            job.fetch_node,
            node,
            fetch_seconds=job.fetch_seconds,
        )
        self._finish(rec)

    def _finish(self, rec: ModelRecord) -> None:
        self.records.append(rec)
        self.counts.running = sum(j.started is not None for j in self.detecting.values())
        self.counts.done += rec.status == "done"
        self.counts.failed += rec.status == "failed"
        self.progress.finished(rec, self.counts)
        if self.on_event is not None:
            self.on_event(rec.status, rec)

    # -- the loop ----------------------------------------------------------------------------

    def run(self, refs: list[ModelRef]) -> list[ModelRecord]:
        import ray

        from pipeline.survey.board import StartBoard
        from pipeline.survey.runtime import gpu_share

        gpus = gpu_share(self.options.gpus_per_model)
        cpus = self.options.cpus_per_model
        cfg = self.settings.config_id
        pending = deque(_Job(ref, file_key(ref.model_id, cfg), self.settings, gpus) for ref in refs)
        self.counts = Counts(total=len(pending))
        self.fetching: dict[Any, _Job] = {}
        self.detecting: dict[Any, _Job] = {}
        # The board lives on the driver's node: it must outlive any worker node.
        here = ray.get_runtime_context().get_node_id()
        self.board = StartBoard.options(scheduling_strategy=_affinity(here, spill=False)).remote()
        try:
            self._loop(pending, gpus, cpus)
        finally:
            ray.kill(self.board)
        return self.records

    def _loop(self, pending: deque[_Job], gpus: float, cpus: float) -> None:
        import ray

        from pipeline.survey.runtime import detect_slots

        slots, slots_at = detect_slots(gpus, cpus), time.monotonic()
        while pending or self.fetching or self.detecting:
            if time.monotonic() - slots_at > 5:  # nodes come and go (autoscaler, failures)
                slots, slots_at = detect_slots(gpus, cpus), time.monotonic()
            # Keep downloads at most max_downloads ahead of what detection can take.
            while (
                pending
                and len(self.fetching) < self.options.max_downloads
                and len(self.fetching) + len(self.detecting) < slots + self.options.max_downloads
            ):
                self._submit_fetch(pending.popleft())
            waiting = [*self.fetching, *self.detecting]
            ready, _ = ray.wait(waiting, num_returns=1, timeout=POLL_SECONDS)
            if ready:
                ready, _ = ray.wait(waiting, num_returns=len(waiting), timeout=0)
            for ref in ready:
                if ref in self.fetching:
                    self._fetched(ref, self.fetching.pop(ref))
                elif ref in self.detecting:
                    self._detected(ref, self.detecting.pop(ref))
            self._read_board()
            self._enforce_timeouts()
            self.counts.running = sum(j.started is not None for j in self.detecting.values())
            self.progress.update(self.counts)

    def _submit_fetch(self, job: _Job) -> None:
        from pipeline.survey.tasks import fetch_task

        ref = fetch_task.options(max_retries=self.options.max_retries).remote(job.key, job.ref)
        self.fetching[ref] = job

    def _submit_detect(self, job: _Job) -> None:
        from pipeline.survey.tasks import detect_task

        opts: dict[str, Any] = {"num_cpus": self.options.cpus_per_model, "max_retries": self.options.max_retries}
        if job.gpus > 0:
            opts["num_gpus"] = job.gpus
        if job.fetch_node:
            opts["scheduling_strategy"] = _affinity(job.fetch_node, spill=True)
        job.started = None
        ref = detect_task.options(**opts).remote(
            job.key, job.ref, job.settings, self.run_id, job.attempt, self.board, job.fetched
        )
        self.detecting[ref] = job

    def _fetched(self, ref: Any, job: _Job) -> None:
        import ray

        try:
            out = ray.get(ref)
        except ray.exceptions.RayError as exc:
            self._fail(job, "fetch", type(exc).__name__, _first_line(exc))
            return
        job.fetch_node, job.fetch_seconds, job.fetched = out.node_id, out.seconds, out.fetched
        if out.error is not None:
            self._fail(job, "fetch", out.error.error_type, out.error.message, node=out.node_id)
            return
        self._submit_detect(job)

    def _detected(self, ref: Any, job: _Job) -> None:
        import ray

        try:
            out = ray.get(ref)
        except ray.exceptions.OutOfMemoryError as exc:  # the host ran out: Ray's memory monitor killed it
            self._oom(job, type(exc).__name__, _first_line(exc), None)
            return
        except ray.exceptions.RayError as exc:  # worker/node died more often than max_retries, ...
            self._fail(job, "detect", type(exc).__name__, _first_line(exc))
            return
        if out.error is not None:
            if out.error.oom:
                self._oom(job, out.error.error_type, out.error.message, out.node_id)
            else:
                self._fail(job, out.error.stage, out.error.error_type, out.error.message, node=out.node_id)
            return
        try:
            self.store.write_model(out.tables, job.key)
        except OSError as exc:
            raise PanSurveyError(f"cannot write results to {self.store.root}: {exc}") from exc
        except Exception as exc:  # tables that do not fit the schema: a bug, but one model's bug
            self._fail(job, "write", type(exc).__name__, _first_line(exc), node=out.node_id)
            return
        row = out.tables["models"].to_pylist()[0]
        rec = ModelRecord(
            job.ref.model_id,
            job.key,
            "done",
            attempts=job.attempt,
            fetch_node=job.fetch_node,
            detect_node=out.node_id,
            device=out.device,
            fetch_seconds=job.fetch_seconds,
            task_seconds=out.seconds,
            pans=int(row.get("pans") or 0),
            padded_neurons=int(row.get("padded_neurons") or 0),
        )
        self._finish(rec)

    def _oom(self, job: _Job, error_type: str, message: str, node: str | None) -> None:
        """Out of memory: once more with twice the GPU share and half the batch, then a failure."""
        if job.attempt >= 2:
            self._fail(job, "detect", error_type, message, node=node)
            return
        job.attempt += 1
        job.gpus = min(1.0, job.gpus * 2) if job.gpus > 0 else 0.0
        job.settings = replace(job.settings, batch_size=max(1, job.settings.batch_size // 2))
        self._submit_detect(job)

    def _read_board(self) -> None:
        import ray

        try:
            events = ray.get(self.board.drain.remote(), timeout=10)
        except (ray.exceptions.RayError, TimeoutError):
            return
        now = time.monotonic()
        by_key = {j.key: j for j in self.detecting.values()}
        for key, attempt, _node in events:
            job = by_key.get(key)
            if job is not None and job.attempt == attempt:
                job.started = now  # a Ray retry after a dead worker restarts the clock

    def _enforce_timeouts(self) -> None:
        import ray

        limit = self.options.timeout_per_model
        if not limit:
            return
        now = time.monotonic()
        for ref, job in list(self.detecting.items()):
            if job.started is not None and now - job.started > limit:
                ray.cancel(ref, force=True)
                del self.detecting[ref]
                self._fail(job, "timeout", "Timeout", f"no result after {limit:g} s; task cancelled")


def _affinity(node_id: str, *, spill: bool) -> Any:
    """Prefer ``node_id``; with ``spill``, run elsewhere when that node is busy (it re-fetches there)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if spill:
        try:
            return NodeAffinitySchedulingStrategy(node_id, soft=True, _spill_on_unavailable=True)
        except TypeError:  # a Ray without the private flag: plain soft affinity
            pass
    return NodeAffinitySchedulingStrategy(node_id, soft=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:2000]


def run_survey(
    specs: list[str],
    out: str | Path,
    settings: DetectSettings | None = None,
    options: SurveyOptions | None = None,
    *,
    on_event: Callable[[str, ModelRecord], None] | None = None,
) -> SurveySummary:
    """Survey every model the specs name; results in ``out``. Resumable: rerun to finish.

    ``on_event(status, record)`` is called on the driver as each model finishes (tests use it
    to stop a run part-way).
    """
    from pipeline.survey.runtime import connect

    settings = settings or DetectSettings()
    options = options or SurveyOptions()
    if not specs:
        raise PanSurveyError("no models to survey: give SPECs or --models-file")
    if options.max_downloads < 1:
        raise PanSurveyError("--max-downloads must be at least 1")
    share = options.gpus_per_model
    if share is not None and (share < 0 or (share > 1 and share % 1)):
        raise PanSurveyError(f"--gpus-per-model {share:g}: use a fraction of one GPU (0-1) or a whole number of GPUs")
    started = time.monotonic()
    store = ResultStore(out)
    store.ensure()
    recover(store.root)  # finish a compaction that was interrupted, before reading the done-index
    run_id = new_run_id()
    cfg = settings.config_id
    config = {
        "settings": settings.to_dict(),
        "result_settings": settings.result_settings(),
        "survey": asdict(options),
        "argv": sys.argv,
    }
    store.write("runs", run_id, run_record(run_id, cfg, "survey", list(specs), config))

    refs, broken = resolve_all(specs, options.random_init)
    records: list[ModelRecord] = []
    for spec, exc in broken:
        key = file_key(spec, cfg)
        msg = _first_line(exc)
        store.write_failure(
            key,
            model_id=spec,
            config_id=cfg,
            run_id=run_id,
            stage="resolve",
            error_type=type(exc).__name__,
            message=msg,
        )
        records.append(ModelRecord(spec, key, "failed", "resolve", type(exc).__name__, msg))
    done = store.done_keys()
    todo = [r for r in refs if file_key(r.model_id, cfg) not in done]
    skipped = len(refs) - len(todo)
    if todo:
        runtime = connect(options.address, num_cpus=options.num_cpus, max_downloads=options.max_downloads)
        progress = make_progress(options.progress, len(todo))
        try:
            survey = Survey(store, settings, options, run_id, progress, on_event)
            records += survey.run(todo)
        finally:
            progress.close()
            runtime.close()
    summary = SurveySummary(
        run_id, cfg, store.root, len(refs) + len(broken), skipped, time.monotonic() - started, records
    )
    summary.folder_models, summary.folder_pans = _folder_totals(store, cfg)
    return summary


def _folder_totals(store: ResultStore, cfg: str) -> tuple[int, int]:
    """Models and PANs in the whole folder under this configuration (this run and earlier ones)."""
    import pyarrow.compute as pc

    models = store.read("models")
    models = models.filter(pc.equal(models["config_id"], cfg))
    return models.num_rows, int(pc.sum(models["pans"]).as_py() or 0)
