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

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from pipeline.compact import recover
from pipeline.errors import PanSurveyError
from pipeline.impact.settings import ImpactSettings, impact_key
from pipeline.settings import DetectSettings
from pipeline.sources import ModelRef
from pipeline.store import ResultStore, file_key, new_run_id, run_config, run_record
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
    impact_id: str | None = None  # with --impact: the impact settings' id (see pipeline/impact/settings.py)

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
    impact_key: str | None = None  # where the impact tables go (None: no impact experiments)
    attempt: int = 1
    fetch_node: str | None = None
    fetch_seconds: float = 0.0
    fetched: dict[str, Any] = field(default_factory=dict)
    started: float | None = None  # driver clock when the detect task reported its start
    null_group: str | None = None  # models sharing a null twin (architecture, size); None: no twin
    measure_null: bool = True


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
    ) -> None:
        self.store = store
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
        pending = deque(
            _Job(ref, file_key(ref.model_id, cfg), self.settings, gpus, self._impact_key(ref.model_id)) for ref in refs
        )
        self.nulls = NullTwins(self.settings)
        for job in pending:
            job.null_group = self.nulls.group(job.ref)
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

    def _impact_key(self, model_id: str) -> str | None:
        if self.impact is None:
            return None
        return impact_key(model_id, self.settings.config_id, self.impact.impact_id)

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
            job.key, job.ref, job.settings, self.run_id, job.attempt, self.board, job.fetched, self.impact,
            job.measure_null,
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
        for ready in self.nulls.dispatch(job):
            self._submit_detect(ready)

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
            self.store.write_model(out.tables, job.key)
        except OSError as exc:
            raise PanSurveyError(f"cannot write results to {self.store.root}: {exc}") from exc
        except Exception as exc:  # tables that do not fit the schema: a bug, but one model's bug
            self._fail(job, "write", type(exc).__name__, _first_line(exc), node=out.node_id)
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
                for name in ("impact_classes", "impact_border", "impact"):  # impact last: it marks done
                    self.store.write(name, key, out.impact_tables[name])
            except OSError as exc:
                raise PanSurveyError(f"cannot write results to {self.store.root}: {exc}") from exc
            except Exception as exc:  # tables that do not fit the schema: a bug, but one model's bug
                from pipeline.survey.tasks import TaskError

                out.impact_error = TaskError.from_exception("impact", exc)
            else:
                self.store.path("failures", key).unlink(missing_ok=True)
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


class NullTwins:
    """Measure each null twin once per (architecture, input size, config) and reuse it for every tag.

    The first model of a group to reach detection measures the twin; the others of its group wait
    (fetched, holding no slot) and then run without it, the driver filling in the twin's counts. If
    that model fails, the next one measures the twin. A folder that already holds the twin's rows
    (a resumed survey) gives its counts too.
    """

    def __init__(self, settings: DetectSettings) -> None:
        self.settings = settings
        self.known: dict[str, tuple[int, int, str | None]] = {}  # null_model_id -> pans, padded, method
        self.done_groups: set[str] = set()
        self.busy: dict[str, _Job] = {}
        self.parked: dict[str, deque[_Job]] = {}

    def group(self, ref: ModelRef) -> str | None:
        if not (self.settings.null and ref.pretrained):
            return None
        from pipeline.sources import random_init_ref

        try:
            return f"{random_init_ref(ref).model_id}|{self.settings.image_size}"
        except Exception:  # a source that cannot name its twin: each model measures its own
            return ref.model_id

    def dispatch(self, job: _Job) -> list[_Job]:
        """Jobs to submit now for a fetched ``job`` (it, or nothing while its group's twin is measured)."""
        g = job.null_group
        if g is None:
            return [job]
        if g in self.done_groups:
            job.measure_null = False
            return [job]
        if g in self.busy and self.busy[g] is not job:
            self.parked.setdefault(g, deque()).append(job)
            return []
        self.busy[g], job.measure_null = job, True
        return [job]

    def measured(self, job: _Job) -> list[_Job]:
        """``job`` is written: when it measured its group's twin, release the models that waited."""
        g = job.null_group
        if g is None or self.busy.get(g) is not job:
            return []
        del self.busy[g]
        self.done_groups.add(g)
        waiting = list(self.parked.pop(g, ()))
        for other in waiting:
            other.measure_null = False
        return waiting

    def failed(self, job: _Job) -> list[_Job]:
        """``job`` failed: if it was measuring its group's twin, hand that to the next waiting model."""
        g = job.null_group
        if g is None or self.busy.get(g) is not job:
            return []
        del self.busy[g]
        waiting = self.parked.get(g)
        return self.dispatch(waiting.popleft()) if waiting else []

    def complete(self, job: _Job, tables: dict[str, Any] | None, store: ResultStore) -> bool:
        """Record or fill in the twin's counts in a finished job's tables; False: the twin is unknown."""
        if tables is None or job.null_group is None:
            return True
        row = tables["models"].to_pylist()[0]
        nid = row.get("null_model_id")
        if nid is None:
            return True
        if job.measure_null:
            self.known[nid] = (row["null_pans"], row["null_padded_neurons"], row["null_recalibration"])
            return True
        counts = self.known.get(nid)
        if counts is None:
            found = store.null_counts(nid, self.settings.config_id)
            counts = (*found, None) if found is not None else None
        if counts is None:
            job.measure_null = True
            return False
        from pipeline.runner import with_null_counts

        tables["models"] = with_null_counts(tables["models"], *counts)
        return True


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
    impact: ImpactSettings | None = None,
    on_event: Callable[[str, ModelRecord], None] | None = None,
) -> SurveySummary:
    """Survey every model the specs name; results in ``out``. Resumable: rerun to finish.

    ``impact``: also run the impact experiments on each model (``pans survey --impact``); a model
    is then done when its impact tables are written too. ``on_event(status, record)`` is called on
    the driver as each model finishes (tests use it to stop a run part-way).
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
    _check_settings(settings, options)
    if impact is not None:
        impact = prepared_impact(impact)
    started = time.monotonic()
    store = ResultStore(out)
    store.ensure()
    recover(store.root)  # finish a compaction that was interrupted, before reading the done-index
    run_id = new_run_id()
    cfg = settings.config_id
    config = run_config(settings, survey=asdict(options))
    run_cfg = cfg
    if impact is not None:
        from pipeline.impact.settings import run_config_id

        config["impact"] = impact.result_settings()
        config["impact_settings"] = asdict(impact)
        config["detect_config_id"], config["impact_id"] = cfg, impact.impact_id
        run_cfg = run_config_id(settings, impact)
    store.write("runs", run_id, run_record(run_id, run_cfg, "survey", list(specs), config))

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
    todo = [
        r
        for r in refs
        if file_key(r.model_id, cfg) not in done
        or (impact is not None and not store.path("impact", impact_key(r.model_id, cfg, impact.impact_id)).is_file())
    ]
    skipped = len(refs) - len(todo)
    if todo:
        runtime = connect(options.address, num_cpus=options.num_cpus, max_downloads=options.max_downloads)
        progress = make_progress(options.progress, len(todo))
        try:
            survey = Survey(store, settings, options, run_id, progress, on_event, impact)
            records += survey.run(todo)
        finally:
            progress.close()
            runtime.close()
    summary = SurveySummary(
        run_id, cfg, store.root, len(refs) + len(broken), skipped, time.monotonic() - started, records
    )
    summary.folder_models, summary.folder_pans = _folder_totals(store, cfg)
    summary.impact_id = impact.impact_id if impact is not None else None
    return summary


def _check_settings(settings: DetectSettings, options: SurveyOptions) -> None:
    """What is wrong for every model is one error here, on the driver, not a failure row per model.

    The probe (a folder must be readable at the same path on every node, as on a shared volume)
    and the device: fully on the embedded runtime (this machine is the cluster), by syntax only
    when joining a cluster (its nodes may have GPUs this driver lacks).
    """
    import os

    from pipeline.detect.core import check_device, resolve_device
    from pipeline.probes import check_probe

    check_probe(settings.probe)
    if options.address is None and not os.environ.get("RAY_ADDRESS"):
        resolve_device(settings.device)
    else:
        check_device(settings.device)


def prepared_impact(impact: ImpactSettings) -> ImpactSettings:
    """Impact settings for the workers: paths made absolute, the image set checked once, here.

    A missing, empty or unreadable image set (or labels file) is the same for every model, so it is
    a one-line error before the survey starts rather than a failure row per model. Labels naming
    classes a model does not have are checked per model (an ``impact`` failure).
    """
    from pipeline.impact.images import load_image_set
    from pipeline.sources.base import Preprocess

    impact = impact.with_absolute_paths()
    load_image_set(impact.images, Preprocess(input_size=(3, 32, 32)), labels=impact.labels,
                   max_images=impact.max_images, seed=impact.seed)
    return impact


def _folder_totals(store: ResultStore, cfg: str) -> tuple[int, int]:
    """Models and PANs in the whole folder under this configuration (this run and earlier ones)."""
    import pyarrow.compute as pc

    models = store.read("models")
    models = models.filter(pc.equal(models["config_id"], cfg))
    return models.num_rows, int(pc.sum(models["pans"]).as_py() or 0)
