"""Where a model's weights are downloaded: on a node that can detect it, so they are fetched once.

A fetch task takes no CPU slot, so Ray would run it anywhere (usually the driver's CPU head).
On a cluster whose nodes do not share a hub cache, the GPU node that then detects the model would
download it a second time. So the driver sends each fetch to a node that can run the model's
detect task (a GPU node when detect tasks ask for GPUs), the one with the fewest models in flight
per detect slot, and the detect task follows it there and waits for a free slot on it (soft
affinity without spilling: a busy node's queue is at most ``--max-downloads`` deep, and spilling
would cost a download on a node that then does not detect). Each weight file then comes from the
hub once per survey with a shared cache, and once per model without one. Only when that node is
lost does the detect task run elsewhere and fetch there (pinned to the same commit).

When no node can detect yet (an autoscaling cluster whose GPU nodes are not up), fetches go where
Ray puts them; with a shared cache that costs nothing.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

#: How often the list of nodes is read again (nodes come and go: autoscaler, failures).
REFRESH_SECONDS = 5.0


def detect_capacity(resources: Mapping[str, float], gpus: float, cpus: float) -> int:
    """How many detect tasks asking for ``gpus`` and ``cpus`` a node with ``resources`` runs at once."""
    fits = [resources.get(name, 0.0) / need for name, need in (("GPU", gpus), ("CPU", cpus)) if need > 0]
    return int(min(fits, default=1) + 1e-9)


@dataclass
class FetchPlacement:
    """Picks the node a model's fetch task runs on (see the module docstring)."""

    gpus: float
    cpus: float
    _capacity: dict[str, int] = field(default_factory=dict)
    _read_at: float = -1e9

    def nodes(self) -> dict[str, int]:
        """Alive nodes that can run a detect task, with how many they run at once."""
        if time.monotonic() - self._read_at > REFRESH_SECONDS:
            import ray

            capacity = {}
            for node in ray.nodes():
                if node.get("Alive"):
                    slots = detect_capacity(node.get("Resources", {}), self.gpus, self.cpus)
                    if slots > 0:
                        capacity[node["NodeID"]] = slots
            self._capacity, self._read_at = capacity, time.monotonic()
        return self._capacity

    def pick(self, in_flight: Mapping[str, int]) -> str | None:
        """The detect-capable node with the fewest models in flight per slot (None: no such node)."""
        nodes = self.nodes()
        if not nodes:
            return None
        return min(nodes, key=lambda n: (in_flight.get(n, 0) / nodes[n], n))
