"""Resource requests no node can meet: a one-line error before anything runs, or a bounded wait.

Ray holds a task no node can run as "infeasible" and waits for ever (an autoscaler may add a
node). A runtime that cannot grow (the embedded one, a cluster without an autoscaler) never
will, so the survey refuses such a request at once (exit 2). On an autoscaling cluster, or with
``--wait-for-nodes S``, the survey waits, the progress says what for and since when, and the
limit (when given) ends the wait with the same one-line error.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from pipeline.errors import PanSurveyError


def node_resources() -> list[dict[str, float]]:
    """Total resources of each alive node."""
    import ray

    return [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]


def has_autoscaler() -> bool:
    """True when the cluster's monitor runs an autoscaler that can launch nodes.

    A cluster started by hand (``ray start``) runs the monitor in read-only mode, whose node
    types are all named ``node_<id>``; an autoscaler from a cluster config names its own types.
    """
    try:
        from ray._private import ray_constants
        from ray.experimental.internal_kv import _internal_kv_get, _internal_kv_initialized

        if not _internal_kv_initialized():
            return False
        raw = _internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS)
        if not raw:
            return False
        report = json.loads(raw).get("autoscaler_report") or {}
    except Exception:
        return False
    types = {*report.get("active_nodes", {}), *report.get("pending_launches", {})}
    return any(not str(t).startswith("node_") for t in types)


def describe_request(request: dict[str, float]) -> str:
    parts = []
    for name, label in (("GPU", "GPU"), ("CPU", "CPU")):
        if request.get(name):
            n = request[name]
            parts.append(f"{n:g} {label}" + ("s" if n != 1 else ""))
    return " and ".join(parts) or "no resources"


def unmet(request: dict[str, float], nodes: list[dict[str, float]]) -> str | None:
    """Why no node can run one task asking for ``request`` (None when one can)."""
    wanted = {k: v for k, v in request.items() if v}
    if any(all(node.get(k, 0) + 1e-9 >= v for k, v in wanted.items()) for node in nodes):
        return None
    best = {k: max((node.get(k, 0) for node in nodes), default=0) for k in wanted}
    have = ", ".join(f"{best[k]:g} {k}" for k in wanted)
    return f"each model asks for {describe_request(wanted)}, but no node has that (the most on one node: {have})"


@dataclass
class NodeWait:
    """Tracks a request the cluster cannot meet yet (on a runtime that can grow)."""

    request: dict[str, float]
    limit: float | None  # --wait-for-nodes seconds (None: wait as long as it takes)
    since: float | None = None
    _checked: float = 0.0
    reason: str | None = None

    def check(self, now: float | None = None) -> str | None:
        """The progress line while waiting ("waiting for GPU nodes, 0:42"), None once a node fits.

        Raises PanSurveyError when the wait passes its limit. Reads the cluster every 2 s.
        """
        now = time.monotonic() if now is None else now
        if now - self._checked >= 2.0 or self._checked == 0.0:
            self._checked = now
            self.reason = unmet(self.request, node_resources())
            if self.reason is None:
                self.since = None
            elif self.since is None:
                self.since = now
        if self.reason is None or self.since is None:
            return None
        waited = now - self.since
        if self.limit is not None and waited > self.limit:
            raise PanSurveyError(f"no node joined within --wait-for-nodes {self.limit:g} s: {self.reason}")
        what = "GPU nodes" if self.request.get("GPU") else "nodes"
        clock = f"{int(waited) // 60}:{int(waited) % 60:02d}"
        return f"waiting for {what} ({describe_request(self.request)} per model), {clock}"


def check_request(
    request: dict[str, float], *, embedded: bool, wait_for_nodes: float | None
) -> NodeWait | None:
    """Fail now when no node can meet ``request`` and the runtime cannot grow; else a wait to watch.

    Returns None when a node fits now (nothing to wait for).
    """
    reason = unmet(request, node_resources())
    if reason is None:
        return None
    can_grow = not embedded and (wait_for_nodes is not None or has_autoscaler())
    if not can_grow:
        where = "this machine" if embedded else "this cluster (no autoscaler; --wait-for-nodes S to wait for nodes)"
        raise PanSurveyError(f"{reason}; {where} cannot grow")
    return NodeWait(request, wait_for_nodes)
