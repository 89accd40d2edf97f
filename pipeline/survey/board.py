"""Where detect tasks say "I started", so the driver times each model from its real start.

Kept apart from the tasks so the actor's process imports only Ray (not torch and timm): on a
small machine that start-up would compete with the first detections.
"""

from __future__ import annotations

import ray


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class StartBoard:
    """Queued tasks (waiting for a GPU, or for the autoscaler to add a node) are not running and
    must not time out; only the driver reads this board, so its clock is the only clock."""

    def __init__(self) -> None:
        self._events: list[tuple[str, int, str]] = []

    def started(self, key: str, attempt: int, node: str) -> None:
        self._events.append((key, attempt, node))

    def drain(self) -> list[tuple[str, int, str]]:
        events, self._events = self._events, []
        return events
