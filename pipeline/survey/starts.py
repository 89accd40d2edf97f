"""Where detect tasks say "I started", so the driver times each model from its real start.

Ray's own key-value store (in the GCS, which every runtime has): a task puts one key as it starts,
the driver lists the run's keys in its loop and deletes what it read. Queued tasks (waiting for a
GPU, or for the autoscaler to add a node) are not running and must not time out; only the driver
reads the marks, so its clock is the only clock. It used to be an actor: one more process to
start, which on a 2-core machine delayed the first detections by 0.4-1.2 s (docs/scaling.md).
Torch-free: the driver imports it.
"""

from __future__ import annotations

#: The key-value namespace of the marks; a run's keys start with its run id.
NAMESPACE = "pans_survey_starts"


def mark_started(run_id: str, key: str, attempt: int) -> None:
    """Called by a detect task as it starts (on the worker)."""
    from ray.experimental.internal_kv import _internal_kv_put

    _internal_kv_put(f"{run_id}/{attempt}/{key}", b"", namespace=NAMESPACE)


def take_started(run_id: str) -> list[tuple[str, int]]:
    """The (model key, attempt) pairs that reported their start since the last call (driver)."""
    from ray.experimental.internal_kv import _internal_kv_del, _internal_kv_list

    taken = []
    for name in _internal_kv_list(f"{run_id}/", namespace=NAMESPACE):
        _internal_kv_del(name, namespace=NAMESPACE)
        _run, attempt, key = name.decode().split("/", 2)
        taken.append((key, int(attempt)))
    return taken


def clear(run_id: str) -> None:
    """Drop the run's marks that nobody read (a run stopped early)."""
    from ray.experimental.internal_kv import _internal_kv_del

    _internal_kv_del(f"{run_id}/", del_by_prefix=True, namespace=NAMESPACE)
