"""Start or join the Ray runtime a survey runs on, and read how much room it has."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import PanSurveyError, one_line

#: Environment a worker on another machine needs to reach the same hub the driver uses.
#: (Tokens are not forwarded: set HF_TOKEN on the cluster's nodes, see docs/cluster.md.)
FORWARDED_ENV = ("HF_ENDPOINT", "HF_HUB_OFFLINE", "HF_HUB_ETAG_TIMEOUT", "HF_HUB_DOWNLOAD_TIMEOUT")

#: GPU share a detect task asks for when the cluster has GPUs and no --gpus-per-model was given:
#: four models per GPU. Most timm CNNs need 1-4 GB for a batch of 16 at their input size.
DEFAULT_GPU_SHARE = 0.25


@dataclass
class Runtime:
    """A connection to Ray; ``owned`` when this process started or joined it (and must let go)."""

    owned: bool
    address: str
    warm_up: list[Any] = field(default_factory=list)  # the detect workers' import tasks (see warmup.py)

    def close(self) -> None:
        import ray

        if self.owned and ray.is_initialized():
            ray.shutdown()


@contextmanager
def _without_idle_helpers(log_to_driver: bool) -> Iterator[None]:
    """While ``ray.init`` starts an embedded runtime, leave out the two helpers it cannot use.

    ``ray.init`` starts what ``ray start --head`` starts, including an autoscaler monitor (the
    embedded runtime has no autoscaler: it never grows) and a log monitor (it only streams worker
    output to a driver that asked for it; the workers write their log files themselves, and those
    are what DIR/logs/ keeps). Each is a Python process importing Ray on the cores the survey's
    own start needs: measured on 2 cores, ``ray.init`` 4.0 s with them, 2.7 s without (alternated,
    two runs each), and no monitor that ignores SIGTERM for ``ray.shutdown()`` to wait out (1 s).
    ``ray start`` has flags for both (``--no-monitor``, ``--include-log-monitor``); ``ray.init``
    does not pass them on, so they are set on the parameters it builds (Ray's own test clusters
    set ``include_log_monitor`` the same way). A Ray without these names starts them as usual
    (tests/test_survey_start.py checks that they are left out).
    """
    try:
        from ray._private.parameter import RayParams
    except ImportError:  # another Ray: its usual start
        yield
        return
    original = RayParams.__init__

    def lean(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.no_monitor = True
        if not log_to_driver:
            self.include_log_monitor = False

    RayParams.__init__ = lean  # type: ignore[method-assign]
    try:
        yield
    finally:
        RayParams.__init__ = original  # type: ignore[method-assign]


def connect(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    max_downloads: int = 4,
    log_to_driver: bool = False,
    memory: int | None = None,
) -> Runtime:
    """Embedded runtime sized to this machine when no address is given (and no RAY_ADDRESS is set);
    otherwise join a running cluster (``auto``, ``host:port`` or a ``ray://`` client address).

    A process already connected to Ray (tests, a Ray job's own driver) keeps its connection.
    ``memory``: the embedded runtime's ``memory`` resource in bytes (the survey's memory budget;
    on a cluster each node's comes from ``ray start --memory``).
    """
    import ray

    if ray.is_initialized():
        return Runtime(owned=False, address=ray.get_runtime_context().gcs_address)
    # An explicit --address from a shell forwards the hub settings to the workers; a Ray job's
    # driver (RAY_ADDRESS set by `ray job submit`) already runs in the job's runtime env.
    forward = address is not None
    address = address or os.environ.get("RAY_ADDRESS") or None
    try:
        if address is None:
            cpus = num_cpus or os.cpu_count() or 1
            with _without_idle_helpers(log_to_driver):
                ray.init(
                    address="local",
                    num_cpus=num_cpus,
                    # Fetch tasks take no CPU slot, so Ray counts their workers as surplus and kills them
                    # when idle; each restart re-imports torch and timm (seconds). Keep them alive.
                    # No Ray-side retries of out-of-memory kills (Ray's default: without end); the driver
                    # retries a killed model once, alone on the node (survey/driver.py, _oom).
                    _system_config={"num_workers_soft_limit": cpus + max_downloads + 1, "task_oom_retries": 0},
                    _memory=memory,
                    include_dashboard=False,
                    log_to_driver=log_to_driver,
                    logging_level="WARNING",
                    configure_logging=True,
                )
            return Runtime(owned=True, address="local")
        _check_reachable(address)
        env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ} if forward else {}
        ray.init(
            address=address,
            runtime_env={"env_vars": env} if env else None,
            log_to_driver=log_to_driver,
            logging_level="WARNING",
        )
        return Runtime(owned=True, address=address)
    except (ConnectionError, TimeoutError, ValueError, RuntimeError) as exc:
        where = address or "a local runtime"
        reason = one_line(exc, 2000, first_line_only=True)
        raise PanSurveyError(f"cannot start or reach Ray at {where}: {reason}") from exc


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds on a HOST:PORT nobody listens on (Ray itself keeps retrying for minutes)."""
    import socket

    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or address in ("auto", "local"):
        return
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise PanSurveyError(f"cannot reach Ray at {address}: {exc.strerror or exc} (is the cluster up?)") from exc


def gpu_share(requested: float | None) -> float:
    """The GPU share of one detect task: as asked, else DEFAULT_GPU_SHARE when the cluster has GPUs.

    On an autoscaling cluster whose GPU nodes are not up yet, pass ``--gpus-per-model`` so the
    tasks ask for GPUs and the autoscaler starts them.
    """
    import ray

    if requested is not None:
        return float(requested)
    return DEFAULT_GPU_SHARE if ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def detect_slots(gpus: float, cpus: float) -> int:
    """How many detect tasks the cluster can run at once right now (at least one)."""
    import ray

    res = ray.cluster_resources()
    if gpus > 0:
        return max(1, int(res.get("GPU", 0) / gpus + 1e-9))
    return max(1, int(res.get("CPU", 1) / cpus + 1e-9))
