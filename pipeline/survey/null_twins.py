"""Null twins in a survey: each measured once per (architecture, input size, config), reused by every tag."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline.settings import DetectSettings
from pipeline.sources import ModelRef, split_null_model_id, twin_ref
from pipeline.store import ResultStore

if TYPE_CHECKING:
    from pipeline.survey.driver import _Job


@dataclass(frozen=True)
class TwinGroup:
    """The models that share one null twin: same architecture, same input size."""

    architecture: str  # the twin's random-init model id (pipeline.sources.twin_ref)
    image_size: int | None  # the survey's --image-size; None: each model's own, known once it is loaded

    def names(self, null_id: str) -> bool:
        """Whether ``null_id`` (a :func:`pipeline.sources.null_model_id`) is this group's twin (of any
        input size when the size is each model's own)."""
        parts = split_null_model_id(null_id)
        if parts is None or parts[0] != self.architecture:
            return False
        return self.image_size is None or parts[1:] == (self.image_size, self.image_size)


class NullTwins:
    """Measure each null twin once per (architecture, input size, config) and reuse it for every tag.

    The first model of a group to reach detection measures the twin; the others of its group wait
    (fetched, holding no slot) and then run without it, the driver filling in the twin's counts. If
    that model fails, the next one measures the twin. A folder that already holds the twin's rows
    (a resumed survey, a compacted folder) gives its counts: no model of that group measures it again.
    """

    def __init__(self, settings: DetectSettings, store: ResultStore | None = None) -> None:
        self.settings = settings
        self.store = store
        self._stored: set[str] | None = None  # twin ids in the folder when the survey started
        self.known: dict[str, tuple[int, int, str | None]] = {}  # null_model_id -> pans, padded, method
        self.done_groups: set[TwinGroup] = set()
        self.busy: dict[TwinGroup, _Job] = {}
        self.parked: dict[TwinGroup, deque[_Job]] = {}

    def group(self, ref: ModelRef) -> TwinGroup | None:
        """``ref``'s twin group; None: no twin shared (none at all, or a source that cannot name the
        twin, whose model then measures its own or fails trying)."""
        if not (self.settings.null and ref.pretrained):
            return None
        try:
            return TwinGroup(twin_ref(ref).model_id, self.settings.image_size)
        except Exception:
            return None

    def dispatch(self, job: _Job) -> list[_Job]:
        """Jobs to submit now for a fetched ``job`` (it, or nothing while its group's twin is measured)."""
        g = job.null_group
        if g is None:
            return [job]
        if g in self.done_groups or self.in_store(g):
            self.done_groups.add(g)
            job.measure_null = False  # if the stored twin is of another input size, complete() says so
            return [job]
        if g in self.busy and self.busy[g] is not job:
            self.parked.setdefault(g, deque()).append(job)
            return []
        self.busy[g], job.measure_null = job, True
        return [job]

    def in_store(self, group: TwinGroup) -> bool:
        """The folder already holds a twin of ``group`` (of its input size, or of some size when the
        model's own size is used: known only once it is loaded)."""
        if self.store is None:
            return False
        if self._stored is None:
            self._stored = self.store.null_model_ids(self.settings.config_id)
        return any(group.names(n) for n in self._stored)

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
