"""What the driver asks before a model becomes a task: can any node ever run it, and with how much memory.

One object per survey run, consulted by the driver loop: :meth:`Admission.admit` estimates a
model's memory (pipeline/survey/memory.py) and refuses one no node can hold, before any download;
:meth:`Admission.waiting` says what the survey waits for on a cluster that can still grow
(pipeline/survey/feasibility.py); :meth:`Admission.after_oom` sizes the single retry after an
out-of-memory kill.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING

from pipeline.survey import feasibility, memory

if TYPE_CHECKING:
    from pipeline.settings import DetectSettings
    from pipeline.sources import ModelRef


class Admission:
    def __init__(self, gpus: float, cpus: float, *, embedded: bool, wait_for_nodes: float | None) -> None:
        request = {"CPU": cpus, "GPU": gpus}
        # Raises PanSurveyError (exit 2) when no node fits and the runtime cannot grow.
        self.wait = feasibility.check_request(request, embedded=embedded, wait_for_nodes=wait_for_nodes)
        self.can_grow = self.wait is not None or (not embedded and feasibility.has_autoscaler())
        self.gpus = gpus
        self.cpus = cpus
        # One GPU's memory, to size each model's GPU share (None: no GPU, or not up yet).
        self.gpu_bytes = memory.gpu_memory() if gpus > 0 and self.wait is None else None
        self.nodes: list[float] = []
        self._read_at = 0.0
        #: Estimates made elsewhere, by model id (a fresh driver's are made on a worker: survey/plan.py).
        self.known: dict[str, memory.MemoryEstimate] = {}
        self.refresh()

    def refresh(self) -> None:
        """Re-read the nodes' memory (nodes come and go); cheap, at most every 5 s."""
        now = time.monotonic()
        if not self.nodes or now - self._read_at > 5:
            self.nodes, self._read_at = memory.node_memory(), now

    def admit(self, ref: ModelRef, settings: DetectSettings) -> tuple[memory.MemoryEstimate, float, str | None]:
        """The model's estimate, its GPU share, and why no node can hold it (None: admitted)."""
        est = self.known.pop(ref.model_id, None) or memory.estimate(ref, settings, on_gpu=self.gpus > 0, cpus=self.cpus)
        if not any(self.nodes):  # a cluster whose nodes report no memory resource: ask for none
            est = replace(est, host_bytes=None)
        share, no_gpu = memory.gpu_share_for(est.device_bytes, self.gpu_bytes, self.gpus)
        return est, share, no_gpu or memory.no_room(est, self.nodes, can_grow=self.can_grow)

    def waiting(self) -> str | None:
        """A progress line while no node can run a task yet ("waiting for GPU nodes ..., 0:42")."""
        return self.wait.check() if self.wait is not None else None

    def after_oom(self, asked: int | None) -> int | None:
        """Memory for the one retry after an out-of-memory kill: the largest node, so it runs alone."""
        return memory.retry_request(asked, self.nodes)
