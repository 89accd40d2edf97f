"""Start the detect workers and their imports (torch, timm, the detector) as a survey begins.

A fresh Ray worker spends seconds importing torch and timm before its first model. Without
a warm-up that happens only once the first detect task arrives, after its weights are fetched;
with it, every detect slot's worker imports while the driver resolves, fetches and queues, so
the cold start overlaps the work instead of preceding it. The warm-up tasks ask for the same
resources as a detect task (so they land on the nodes and in the workers that detect) and
return at once after the imports; nothing waits for them.
"""

from __future__ import annotations

from typing import Any

import ray

_frozen = False


def import_detector() -> str:
    """Import what a detect task needs, then freeze it out of the garbage collector (once per worker).

    A worker frees each model with a full ``gc.collect()`` (pipeline/survey/tasks.py); with torch
    and timm imported that walks ~400 k objects (about 0.1-0.2 s per model on a small machine).
    ``gc.freeze()`` moves the objects that exist after the imports, which live as long as the
    worker, out of the collector's sight, so the per-model collection only sees the model's objects.
    No collection before it: after these imports one finds 4 unreachable objects of 415 k and costs
    0.16 s of CPU, at the moment every worker of a cold survey is importing at once. For the same
    reason the collector is off during the imports: the automatic collections it runs while those
    objects are created cost 0.4-0.6 s of the imports' 3.8-4.0 s of CPU (three alternated pairs).
    """
    global _frozen
    import gc

    collecting = gc.isenabled() and not _frozen
    if collecting:
        gc.disable()
    try:
        import timm  # noqa: F401

        import pipeline.runner
        import pipeline.sources  # noqa: F401
    finally:
        if collecting:
            gc.enable()
    if not _frozen:
        gc.freeze()
        _frozen = True
    return ray.get_runtime_context().get_node_id()


warm_task = ray.remote(max_retries=0)(import_detector)


def warm_workers(slots: int, gpus: float, cpus: float) -> list[Any]:
    """Submit one import task per detect slot, spread over the nodes; returns their refs."""
    opts: dict[str, Any] = {"num_cpus": cpus, "scheduling_strategy": "SPREAD"}
    if gpus > 0:
        opts["num_gpus"] = gpus
    return [warm_task.options(**opts).remote() for _ in range(slots)]
