"""Resolve the specs and estimate the first models on a detect worker, for a driver without torch.

A fresh ``pans survey`` process needs torch and timm only to resolve timm names and to estimate
memory on the meta device; importing them costs it 3.3 s of CPU, which on a small machine the
runtime's start and the workers' own imports of the same modules are waiting for. A detect
worker imports them anyway: one task there resolves every spec and estimates the models the
driver admits first (its lookahead window), and the driver never imports torch. A driver that
already has torch (tests, a notebook, the benches) resolves and estimates itself, as before.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.settings import DetectSettings
    from pipeline.survey.memory import MemoryEstimate


def driver_has_torch() -> bool:
    """Whether this process has imported torch already (then resolving here costs nothing more)."""
    return "torch" in sys.modules


def plan(
    specs: list[str], random_init: bool, settings: DetectSettings, on_gpu: bool, cpus: float, first: int
) -> tuple[list[Any], list[tuple[str, BaseException]], dict[str, MemoryEstimate]]:
    """What ``resolve_all`` gives, plus the memory estimates of the first ``first`` refs."""
    from pipeline.survey.driver import resolve_all
    from pipeline.survey.memory import estimate
    from pipeline.survey.warmup import import_detector

    import_detector()
    refs, broken = resolve_all(specs, random_init)
    return refs, broken, {r.model_id: estimate(r, settings, on_gpu=on_gpu, cpus=cpus) for r in refs[:first]}


def remote_plan(
    specs: list[str], random_init: bool, settings: DetectSettings, on_gpu: bool, cpus: float, first: int
) -> Any:
    """Submit :func:`plan` as one CPU task; returns its ref.

    One CPU, never a GPU or a detect task's own request: it must run on any runtime, even one that
    cannot meet a detect task's request (the driver says so in one line once it has the refs:
    pipeline/survey/feasibility.py). Its CPU slot makes it wait for a warm worker (one that ran
    its warm-up import) instead of starting a new worker that would import torch again.
    """
    import ray

    return ray.remote(plan).options(num_cpus=1, max_retries=1).remote(specs, random_init, settings, on_gpu, cpus, first)
