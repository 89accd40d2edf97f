"""The survey driver: resolve specs, skip what is done, keep fetch and detect tasks flowing, write.

The driver is the only writer of the results folder. Each model goes
pending -> fetching (CPU task, at most ``max_downloads`` at once) -> detecting (GPU share or
CPU task, placed on the node that fetched when it has room) -> written or failed. Failures are
data: they become rows of ``failures`` and the survey goes on. Resume is by
``(model_id, config_id)``: a rerun skips every model whose ``models`` row exists.

With impact settings (``pans survey --impact``) the detect task also runs the impact experiments
on the model it has loaded, and the driver writes the ``impact``, ``impact_classes`` and
``impact_border`` tables under :func:`pipeline.impact.impact_key` (``impact`` last: it marks the
model's impact done). A model counts as done only when that file exists too; an impact failure is a
``failures`` row with stage ``impact``, stored under the impact key, while the model's detection
tables are written as usual.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from pipeline.errors import PanSurveyError, one_line
from pipeline.impact.settings import ImpactSettings, impact_key, impact_run_config, run_config_id
from pipeline.settings import DetectSettings
from pipeline.sources import ModelRef
from pipeline.sources.base import former_ids
from pipeline.store import ResultStore, file_key, new_run_id, run_config, run_record
from pipeline.survey.logs import SurveyLog
from pipeline.survey.memory import oom_message
from pipeline.survey.null_twins import NullTwins, TwinGroup
from pipeline.survey.plan import driver_has_torch
from pipeline.survey.progress import Progress, make_progress
from pipeline.survey.records import Counts, ModelRecord, SurveyOptions, SurveySummary  # also importable from here
from pipeline.survey.runtime import Runtime

#: How often the driver wakes up when nothing finishes (to check timeouts, refresh the bar).
POLL_SECONDS = 0.25


@dataclass
class _Job:
    ref: ModelRef
    key: str
    settings: DetectSettings
    gpus: float
    impact_key: str | None = None  # where the impact tables go (None: no impact experiments)
    attempt: int = 1
    fetch_node: str | None = None
    fetch_seconds: float = 0.0
    fetched: dict[str, Any] = field(default_factory=dict)
    started: float | None = None  # driver clock when the detect task reported its start
    memory: int | None = None  # bytes asked of Ray's memory resource (None: not estimated)
    oom_retried: bool = False
    fetch_tries: int = 0  # fetches re-run after a memory kill or a lost node
    details: str | None = None  # set when the log holds this model's full error text
    submitted: float = 0.0  # driver clock when the detect task was submitted
    target: str | None = None  # the node its fetch was sent to (see pipeline/survey/placement.py)
    null_group: TwinGroup | None = None  # models sharing a null twin; None: none shared (see NullTwins.group)
    measure_null: bool = True
    admitted: tuple[Any, float, str | None] | None = None  # Admission.admit's answer, once asked
    overtaken: int = 0  # models submitted after this one that started while it waited (see _starving)


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
        impact: ImpactSettings | None = None,
        log: SurveyLog | None = None,
    ) -> None:
        self.store = store
        self.log = log
        self.settings = settings
        self.impact = impact
        self.options = options
        self.run_id = run_id
        self.progress = progress
        self.on_event = on_event
        self.records: list[ModelRecord] = []

    # -- bookkeeping -------------------------------------------------------------------------

    def _fail(self, job: _Job, stage: str, error_type: str, message: str, node: str | None = None) -> None:
        for ready in self.nulls.failed(job):  # another model of its architecture measures the twin
            self._submit_detect(ready)
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
            details=job.details,
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

    def run(self, refs: list[ModelRef], estimates: dict[str, Any] | None = None) -> list[ModelRecord]:
        """``estimates``: memory estimates by model id made elsewhere (pipeline/survey/plan.py)."""
        import ray

        from pipeline.survey import starts
        from pipeline.survey.admission import Admission
        from pipeline.survey.placement import FetchPlacement
        from pipeline.survey.runtime import gpu_share

        gpus = gpu_share(self.options.gpus_per_model)
        cpus = self.options.cpus_per_model
        # A request no node can ever meet fails here, before any task (see feasibility.py).
        opts = self.options
        self.admission = Admission(gpus, cpus, embedded=opts.embedded, wait_for_nodes=opts.wait_for_nodes)
        self.admission.known.update(estimates or {})
        cfg = self.settings.config_id
        pending = deque(
            _Job(ref, file_key(ref.model_id, cfg), self.settings, gpus, self._impact_key(ref.model_id)) for ref in refs
        )
        self.nulls = NullTwins(self.settings, self.store)
        for job in pending:
            job.null_group = self.nulls.group(job.ref)
        self.counts = Counts(total=len(pending))
        self.fetching: dict[Any, _Job] = {}
        self.detecting: dict[Any, _Job] = {}
        self.ready: list[_Job] = []  # ready to detect, held here until a slot is free (see _submit_detect)
        self.placement = FetchPlacement(gpus, cpus)
        try:
            self._loop(pending, gpus, cpus)
        finally:
            for ref in [*self.fetching, *self.detecting]:  # stopped early: leave nothing queued in Ray
                ray.cancel(ref, force=True)
            starts.clear(self.run_id)
        return self.records

    def _impact_key(self, model_id: str) -> str | None:
        if self.impact is None:
            return None
        return impact_key(model_id, self.settings.config_id, self.impact.impact_id)

    def _loop(self, pending: deque[_Job], gpus: float, cpus: float) -> None:
        import ray

        from pipeline.survey import signals
        from pipeline.survey.runtime import detect_slots

        self.slots, slots_at = detect_slots(gpus, cpus), time.monotonic()
        while pending or self.fetching or self.detecting or self.ready:
            signals.check()  # SIGINT/SIGTERM: stop here, between two Ray calls
            if time.monotonic() - slots_at > 5:  # nodes come and go (autoscaler, failures)
                self.slots, slots_at = detect_slots(gpus, cpus), time.monotonic()
            slots = self.slots
            # Keep downloads at most max_downloads ahead of what detection can take.
            while (
                pending
                and not self._starving(slots)
                and len(self.fetching) < self.options.max_downloads
                and len(self.fetching) + len(self.detecting) + len(self.ready) < slots + self.options.max_downloads
            ):
                self._admit_and_fetch(self._costliest(pending, 2 * (slots + self.options.max_downloads)))
            self._release_ready()
            waiting = [*self.fetching, *self.detecting]
            if not waiting:
                continue
            ready, _ = ray.wait(waiting, num_returns=1, timeout=POLL_SECONDS)
            if ready:
                ready, _ = ray.wait(waiting, num_returns=len(waiting), timeout=0)
            fetched = [(ref, self.fetching.pop(ref)) for ref in ready if ref in self.fetching]
            detected = [(ref, self.detecting.pop(ref)) for ref in ready if ref in self.detecting]
            self._release_ready()  # the freed slots take their next model before the driver writes
            for ref, job in fetched:
                self._fetched(ref, job)
            for ref, job in detected:
                self._detected(ref, job)
            self._read_starts()
            self._enforce_timeouts()
            self.counts.running = sum(j.started is not None for j in self.detecting.values())
            self.counts.waiting = self.admission.waiting() if not self.counts.running else None
            self.progress.update(self.counts)

    def _costliest(self, pending: deque[_Job], window: int) -> _Job:
        """Take the costliest of the next ``window`` pending models (estimated multiply-accumulates).

        Longest first: a survey whose biggest model starts last ends with one slot busy and the
        others idle (on the 8-model bench: 8.6 s where the work fits in 7.6 s over two slots).
        """
        self.admission.refresh()
        best, cost = 0, -1
        for i in range(min(window, len(pending))):
            job = pending[i]
            if job.admitted is None:
                job.admitted = self.admission.admit(job.ref, job.settings)
            macs = _macs(job)
            if macs > cost:
                best, cost = i, macs
        job = pending[best]
        del pending[best]
        return job

    def _admit_and_fetch(self, job: _Job) -> None:
        """A model estimated by :meth:`_costliest`: one that no node can hold is a failure now, never a task."""
        est, job.gpus, refused = job.admitted
        job.memory = est.host_bytes
        if refused is not None:
            self._fail(job, "memory", "InsufficientMemory", refused)
            return
        self._submit_fetch(job)

    def _submit_fetch(self, job: _Job) -> None:
        from pipeline.sources import needs_download
        from pipeline.survey.tasks import fetch_task

        if not needs_download(job.ref):  # random init, a local file: the detect task loads it itself
            for ready in self.nulls.dispatch(job):
                self._submit_detect(ready)
            return
        in_flight = Counter(j.fetch_node or j.target for j in [*self.fetching.values(), *self.detecting.values()])
        job.target = self.placement.pick(in_flight)
        # No Ray retries (see _submit_detect): a fetch killed for memory someone else used, or lost
        # with its node, is re-run by _fetched, max_retries times.
        opts: dict[str, Any] = {"max_retries": 0}
        if job.target is not None:
            opts["scheduling_strategy"] = _affinity(job.target)
        ref = fetch_task.options(**opts).remote(job.key, job.ref)
        self.fetching[ref] = job

    def _submit_detect(self, job: _Job) -> None:
        """Queue ``job`` for detection: at once on a runtime that can grow, else when a slot is free.

        Ray does not start queued tasks in the order they were submitted but scheduling class by
        scheduling class (each memory request is a class of its own), so with more tasks queued
        than slots the costliest-first order of :meth:`_costliest` was lost: on the 8-model bench the
        costliest model started fifth and the survey ended with one slot idle. On a runtime that
        cannot grow (the embedded one, a fixed cluster) the driver holds what is ready and submits
        the costliest held model whenever fewer than ``slots`` detect tasks are in Ray. An
        autoscaling cluster needs the queued tasks as demand to add nodes, so there nothing waits.
        """
        self.ready.append(job)
        self._release_ready()

    def _release_ready(self) -> None:
        """Submit held models, costliest first, while a slot is free (or all, where the cluster can grow)."""
        can_grow = self.admission.can_grow
        while self.ready and (can_grow or len(self.detecting) < max(1, self.slots)):
            job = max(self.ready, key=_macs)  # the first of equals: submission order
            self.ready.remove(job)
            self._send_detect(job)

    def _send_detect(self, job: _Job) -> None:
        from pipeline.survey.tasks import detect_task

        # No Ray retries: Ray re-runs a task killed for memory without end; the driver retries instead
        # (see _lost and _oom), so every re-run is counted.
        opts: dict[str, Any] = {"num_cpus": self.options.cpus_per_model, "max_retries": 0}
        if job.memory:
            opts["memory"] = job.memory
        if job.gpus > 0:
            opts["num_gpus"] = job.gpus
        if job.fetch_node:  # where the weights are; see pipeline/survey/placement.py
            opts["scheduling_strategy"] = _affinity(job.fetch_node)
        job.started, job.submitted, job.overtaken = None, time.monotonic(), 0
        ref = detect_task.options(**opts).remote(
            job.key, job.ref, job.settings, self.run_id, job.attempt, job.fetched, self.impact,
            job.measure_null,
        )
        self.detecting[ref] = job

    def _fetched(self, ref: Any, job: _Job) -> None:
        import ray

        try:
            out = ray.get(ref)
        except ray.exceptions.RayError as exc:
            self._detail(job, f"fetch: {type(exc).__name__}", str(exc))
            if isinstance(exc, (ray.exceptions.OutOfMemoryError, *_lost_errors())):
                job.fetch_tries += 1
                if job.fetch_tries <= self.options.max_retries:
                    self._submit_fetch(job)
                    return
            message = oom_message(exc, job.memory) if isinstance(exc, ray.exceptions.OutOfMemoryError) else None
            self._fail(job, "fetch", type(exc).__name__, message or one_line(exc, 2000, first_line_only=True))
            return
        job.fetch_node, job.fetch_seconds, job.fetched = out.node_id, out.seconds, out.fetched
        if out.error is not None:
            self._fail(job, "fetch", out.error.error_type, out.error.message, node=out.node_id)
            return
        for ready in self.nulls.dispatch(job):
            self._submit_detect(ready)

    def _detected(self, ref: Any, job: _Job) -> None:
        import ray

        try:
            out = ray.get(ref)
        except ray.exceptions.OutOfMemoryError as exc:  # the host ran out: Ray's memory monitor killed it
            self._detail(job, "out of memory (killed by Ray's memory monitor)", str(exc))
            self._oom(job, type(exc).__name__, oom_message(exc, job.memory), None, host=True)
            return
        except _lost_errors() as exc:  # the worker or its node died: run it again, up to max_retries times
            self._lost(job, exc)
            return
        except ray.exceptions.RayError as exc:
            self._detail(job, type(exc).__name__, str(exc))
            self._fail(job, "detect", type(exc).__name__, one_line(exc, 2000, first_line_only=True))
            return
        if out.error is None and not self.nulls.complete(job, out.tables, self.store):
            self._submit_detect(job)  # its twin (another input size) was not measured: measure it now
            return
        if out.error is not None:
            if out.error.oom:
                self._oom(job, out.error.error_type, out.error.message, out.node_id)
            else:
                self._fail(job, out.error.stage, out.error.error_type, out.error.message, node=out.node_id)
            return
        try:
            self.store.write_model(out.tables, job.key)  # skipped when done (compacted): never twice
        except OSError:
            raise  # a full disk stops the survey (one line, from ResultStore.writing)
        except Exception as exc:  # tables that do not fit the schema: a bug, but one model's bug
            self._fail(job, "write", type(exc).__name__, one_line(exc, 2000, first_line_only=True), node=out.node_id)
            return
        for ready in self.nulls.measured(job):
            self._submit_detect(ready)
        row = out.tables["models"].to_pylist()[0]
        done = {
            "attempts": job.attempt,
            "fetch_node": job.fetch_node,
            "detect_node": out.node_id,
            "device": out.device,
            "fetch_seconds": job.fetch_seconds,
            "task_seconds": out.seconds,
            "pans": int(row.get("pans") or 0),
            "padded_neurons": int(row.get("padded_neurons") or 0),
        }
        if job.impact_key is not None and not self._write_impact(job, out):
            error = out.impact_error
            why = {
                "stage": "impact",
                "error_type": error.error_type if error else "Error",
                "message": error.message if error else "no impact tables",
            }
            self._finish(ModelRecord(job.ref.model_id, job.impact_key, "failed", **why, **done))
            return
        self._finish(ModelRecord(job.ref.model_id, job.key, "done", **done))

    def _write_impact(self, job: _Job, out: Any) -> bool:
        """Write a model's impact tables (``impact`` last), or its impact failure; True when written."""
        assert job.impact_key is not None
        key = job.impact_key
        if out.impact_error is None and out.impact_tables is not None:
            try:
                self.store.write_impact(out.impact_tables, key)  # impact last: it marks done
            except OSError:
                raise  # a full disk stops the survey (one line, from ResultStore.writing)
            except Exception as exc:  # tables that do not fit the schema: a bug, but one model's bug
                from pipeline.survey.tasks import TaskError

                out.impact_error = TaskError.from_exception("impact", exc)
            else:
                return True
        error = out.impact_error
        self.store.write_failure(
            key,
            model_id=job.ref.model_id,
            config_id=self.settings.config_id,
            run_id=self.run_id,
            stage="impact",
            error_type=error.error_type if error else "Error",
            message=error.message if error else "the detect task returned no impact tables",
            attempt=job.attempt,
        )
        return False

    def _oom(self, job: _Job, error_type: str, message: str, node: str | None, *, host: bool = False) -> None:
        """Out of memory: once more with twice the GPU share, half the batch and (host memory) a
        whole node to itself, then a failure record."""
        if job.oom_retried:
            if host:
                message = f"{message}; twice, the second time alone on its node"
            self._fail(job, "detect", error_type, message, node=node)
            return
        job.oom_retried = True
        job.attempt += 1
        job.gpus = min(1.0, job.gpus * 2) if job.gpus > 0 else 0.0
        job.settings = replace(job.settings, batch_size=max(1, job.settings.batch_size // 2))
        if host:
            job.memory = self.admission.after_oom(job.memory)
        self._submit_detect(job)

    def _lost(self, job: _Job, exc: BaseException) -> None:
        """A dead worker or node is not the model's fault: run it again (max_retries times)."""
        if job.attempt > self.options.max_retries:
            self._detail(job, type(exc).__name__, str(exc))
            self._fail(job, "detect", type(exc).__name__, one_line(exc, 2000, first_line_only=True))
            return
        job.attempt += 1
        self._submit_detect(job)

    def _detail(self, job: _Job, title: str, text: str) -> None:
        if self.log is not None:
            self.log.detail(f"{job.ref.model_id}: {title}", text)
            job.details = str(self.log.path)

    def _read_starts(self) -> None:
        """Take the start marks the detect tasks left (pipeline/survey/starts.py)."""
        from pipeline.survey.starts import take_started

        now = time.monotonic()
        by_key = {j.key: j for j in self.detecting.values()}
        for key, attempt in take_started(self.run_id):
            job = by_key.get(key)
            if job is not None and job.attempt == attempt:
                self._mark_started(job, now)

    def _mark_started(self, job: _Job, now: float) -> None:
        job.started = now  # a Ray retry after a dead worker restarts the clock
        for other in self.detecting.values():  # queued before it and still waiting: overtaken
            if other.started is None and other.submitted < job.submitted:
                other.overtaken += 1

    def _starving(self, slots: int) -> bool:
        """A queued model that later ones keep overtaking: admit nothing new until it starts.

        Ray starts whatever fits, scheduling class by scheduling class (each memory request is a
        class of its own), so nothing stops one model from being passed over for ever: one needing
        most of a node, or just one whose class keeps losing (measured: cait_xs24_384 in the
        one-per-family zoo run waited 900 s, its start timeout, while ~200 later models ran)."""
        return any(j.started is None and j.overtaken >= max(1, slots) for j in self.detecting.values())

    def _enforce_timeouts(self) -> None:
        import ray

        limit = self.options.timeout_per_model
        if not limit:
            return
        start_limit = self.options.start_timeout or 3 * limit
        now = time.monotonic()
        for ref, job in list(self.detecting.items()):
            if job.started is not None and now - job.started > limit:
                why = f"no result after {limit:g} s; task cancelled"
            elif job.started is None and now - job.submitted > start_limit:
                why = f"the task did not report its start within {start_limit:g} s of submission; task cancelled"
            else:
                continue
            ray.cancel(ref, force=True)
            del self.detecting[ref]
            self._fail(job, "timeout", "Timeout", why)


def _macs(job: _Job) -> int:
    """The estimated multiply-accumulates of ``job`` (0 when not estimated)."""
    return (job.admitted[0].macs or 0) if job.admitted else 0


def _affinity(node_id: str) -> Any:
    """Run on ``node_id`` (waiting for room there); elsewhere only when that node is dead or infeasible."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id, soft=True)


def _lost_errors() -> tuple[type[BaseException], ...]:
    """Ray errors that mean the task's worker or node died under it (not the model's fault)."""
    import ray.exceptions as rex

    names = ("WorkerCrashedError", "NodeDiedError", "LocalRayletDiedError", "ObjectLostError")
    return tuple(getattr(rex, n) for n in names if hasattr(rex, n))


def run_survey(
    specs: list[str],
    out: str | Path,
    settings: DetectSettings | None = None,
    options: SurveyOptions | None = None,
    *,
    impact: ImpactSettings | None = None,
    on_event: Callable[[str, ModelRecord], None] | None = None,
) -> SurveySummary:
    """Survey every model the specs name; results in ``out``. Resumable: rerun to finish.

    ``impact``: also run the impact experiments on each model (``pans survey --impact``); a model
    is then done when its impact tables are written too. ``on_event(status, record)`` is called on
    the driver as each model finishes (tests use it to stop a run part-way).
    """
    from pipeline.survey.memory import budget_bytes

    settings = settings or DetectSettings()
    options = options or SurveyOptions()
    if not specs:
        raise PanSurveyError("no models to survey: give SPECs or --models-file")
    options.check()
    settings.check(embedded=options.embedded)
    budget = budget_bytes(options.memory_budget_gb)
    if options.memory_budget_gb is not None and not options.embedded:
        raise PanSurveyError("--memory-budget sizes the local runtime; on a cluster use ray start --memory")
    if impact is not None:
        impact = impact.prepared()
    started = time.monotonic()
    store = ResultStore(out)
    with store.writing("survey"):  # one writer per folder; finishes an interrupted compaction first
        return _run_locked(store, specs, settings, options, impact, on_event, started, budget)


def _start_runtime(
    running: contextlib.ExitStack, log: SurveyLog, options: SurveyOptions, budget: int | None
) -> Runtime:
    """Ray's output to DIR/logs/, signals noted, the runtime up and its detect workers importing.

    Everything is undone by ``running`` when the run ends (session logs copied, an owned runtime
    shut down), whatever way it ends.
    """
    from pipeline.survey import signals
    from pipeline.survey.runtime import connect, detect_slots, gpu_share
    from pipeline.survey.warmup import warm_workers

    running.enter_context(log)
    running.enter_context(signals.interruptible())  # SIGINT/SIGTERM end the run cleanly (signals.py)
    signals.install(defer=True)  # from here on Ray's compiled code runs: note signals, stop in the loop
    runtime = connect(options.address, num_cpus=options.num_cpus, max_downloads=options.max_downloads, memory=budget)
    signals.install(defer=True)  # ray.init installs its own SIGTERM handler
    running.callback(runtime.close)
    if runtime.owned and options.embedded:
        running.callback(log.copy_session_logs)  # runs before close: callbacks unwind last-in first-out
    gpus, cpus = gpu_share(options.gpus_per_model), options.cpus_per_model
    runtime.warm_up = warm_workers(detect_slots(gpus, cpus), gpus, cpus)  # imports overlap what comes next
    return runtime


def _plan_remotely(
    specs: list[str], settings: DetectSettings, options: SurveyOptions
) -> tuple[list[ModelRef], list[tuple[str, BaseException]], dict[str, Any]]:
    """Resolve and estimate the first window on a detect worker (pipeline/survey/plan.py); if that
    task is lost, resolve here (no estimates: the driver makes them as it admits)."""
    import ray

    from pipeline.survey import signals
    from pipeline.survey.plan import remote_plan
    from pipeline.survey.runtime import detect_slots, gpu_share

    gpus, cpus = gpu_share(options.gpus_per_model), options.cpus_per_model
    window = 2 * (detect_slots(gpus, cpus) + options.max_downloads)  # what Survey._costliest looks at first
    ref = remote_plan(list(specs), options.random_init, settings, gpus > 0, cpus, window)
    while not ray.wait([ref], timeout=POLL_SECONDS)[0]:
        signals.check()
    try:
        return ray.get(ref)
    except ray.exceptions.RayError:
        refs, broken = resolve_all(specs, options.random_init)
        return refs, broken, {}


def _run_locked(
    store: ResultStore,
    specs: list[str],
    settings: DetectSettings,
    options: SurveyOptions,
    impact: ImpactSettings | None,
    on_event: Callable[[str, ModelRecord], None] | None,
    started: float,
    budget: int | None,
) -> SurveySummary:
    from pipeline.survey import signals

    run_id = new_run_id()
    cfg = settings.config_id
    config = run_config(settings, survey=asdict(options), **(impact_run_config(settings, impact) if impact else {}))
    store.write("runs", run_id, run_record(run_id, run_config_id(settings, impact), "survey", list(specs), config))
    log = SurveyLog(store.root, run_id)
    records: list[ModelRecord] = []
    with contextlib.ExitStack() as running:
        runtime: Runtime | None = None
        estimates: dict[str, Any] = {}
        if options.embedded and not store.done_keys() and not driver_has_torch():
            # A fresh `pans survey` process: the specs resolve, and the first models are estimated,
            # on a detect worker that imports torch and timm anyway (pipeline/survey/plan.py).
            runtime = _start_runtime(running, log, options, budget)
            refs, broken, estimates = _plan_remotely(specs, settings, options)
        elif options.embedded and not store.done_keys():
            # A fresh folder will run a survey: start the local runtime and its workers' imports while
            # the specs resolve (importing timm alone takes seconds), instead of one after the other.
            pool = running.enter_context(ThreadPoolExecutor(1, thread_name_prefix="resolve"))
            resolving = pool.submit(resolve_all, specs, options.random_init)
            runtime = _start_runtime(running, log, options, budget)
            refs, broken = resolving.result()
            signals.check()  # a signal while the specs resolved
        else:
            refs, broken = resolve_all(specs, options.random_init)
        for spec, exc in broken:
            key = file_key(spec, cfg)
            msg = one_line(exc, 2000, first_line_only=True)
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
        for spec in set(specs) - {spec for spec, _ in broken}:  # resolves now: its old resolve failure is void
            store.clear_failure(file_key(spec, cfg))
        done = store.done_keys()
        todo = [
            r
            for r in refs
            if not any(file_key(i, cfg) in done for i in (r.model_id, *former_ids(r)))  # old folders: old ids too
            or (impact is not None and not store.impact_done(impact_key(r.model_id, cfg, impact.impact_id)))
        ]
        skipped = len(refs) - len(todo)
        if todo:
            if runtime is None:
                runtime = _start_runtime(running, log, options, budget)
            progress = running.enter_context(
                contextlib.closing(make_progress(options.progress, len(todo), log.terminal, log=log.path))
            )
            survey = Survey(store, settings, options, run_id, progress, on_event, impact, log)
            records += survey.run(todo, estimates)
    summary = SurveySummary(
        run_id, cfg, store.root, len(refs) + len(broken), skipped, time.monotonic() - started, records
    )
    summary.folder_models, summary.folder_pans = store.totals(cfg)
    summary.impact_id = impact.impact_id if impact is not None else None
    summary.log = log.path if log.path.is_file() else None
    return summary

