"""How much memory one model's detect task needs, and whether any node of the cluster can give it.

The survey asks Ray for each detect task's estimate as the logical ``memory`` resource, so Ray
never co-schedules two models whose estimates do not fit a node together, and a model whose
estimate exceeds every node becomes a failure record before any task (and any download) exists.

The estimate is built from what ``pans zoo`` already knows, with no weights and no memory: the
architecture is built on the meta device (parameter and buffer bytes, in their dtype) and run
once on a meta input of the survey's batch at the model's input size, with hooks recording the
largest activation. Host memory while loading a checkpoint holds the weights twice (the state
dict and the module), and a trained model's null twin (pipeline/null_twin.py) is built beside
it, a third copy; detection keeps a few activations of the largest layer alive at once.
What the worker process itself holds (Python, torch, timm: about 0.5 GB) is not counted: idle
workers hold it whether or not a model runs, and Ray's own ``memory`` resource already leaves
room for the system.

The budget: by default each node's ``memory`` resource as Ray reports it (on a cluster: what
``ray start --memory`` set, else Ray's default share of the node's RAM). ``--memory-budget GB``
or ``PANS_SURVEY_MEMORY_GB`` sets the embedded runtime's ``memory`` resource (tests use a small one).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.settings import DetectSettings
    from pipeline.sources import ModelRef

#: Environment variable read when no ``--memory-budget`` is given (GB, decimal).
BUDGET_ENV = "PANS_SURVEY_MEMORY_GB"

#: Activations alive at once during detection, in units of the largest layer's output: the
#: layer's input and output, the detector's copy of the output, and a residual branch.
ACTIVATION_COPIES = 4

#: Host copies of the weights while a checkpoint is loaded (state dict + module parameters).
LOAD_COPIES = 2

#: Longest building the model or its meta forward may take on the driver before it counts as unknown.
FORWARD_SECONDS = 10.0

#: The smallest request: a model too small to estimate still takes some room.
MIN_BYTES = 64 * 2**20

#: Every task's share beyond weights and activations: the probe images, the detector's per-layer
#: statistics, allocator slack. Measured with bench/bench_memory.py (6 timm models, batch 16:
#: estimate / measured 0.75-1.18 without it).
TASK_BYTES = 64 * 2**20

GB = 1e9


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one detect task needs beyond its worker's own footprint; ``None`` fields are unknown."""

    params: int | None  # parameter count
    weight_bytes: int | None  # parameters and buffers in their dtype
    activation_bytes: int | None  # the largest single activation at the survey's batch and input size
    host_bytes: int | None  # host RAM the task needs (what it asks Ray for)
    device_bytes: int | None  # accelerator memory on a GPU task
    note: str | None = None  # why something is unknown
    #: Multiply-accumulates of the convolutions and linear layers in one detection batch: the
    #: driver's measure of a task's cost, to start the longest ones first (None: not estimated).
    macs: int | None = None

    @property
    def known(self) -> bool:
        return self.host_bytes is not None


def fmt_gb(n: float) -> str:
    """``20 GB``, ``1.4 GB``, ``0.35 GB``: short, for one-line messages."""
    gb = n / GB
    return f"{gb:.0f} GB" if gb >= 10 else f"{gb:.1f} GB" if gb >= 1 else f"{gb:.2f} GB"


def budget_bytes(option_gb: float | None = None) -> int | None:
    """The embedded runtime's ``memory`` resource: ``--memory-budget``, else the env var, else None
    (Ray's default). A malformed env value is a one-line error."""
    from pipeline.errors import PanSurveyError

    if option_gb is None:
        text = os.environ.get(BUDGET_ENV, "").strip()
        if not text:
            return None
        try:
            option_gb = float(text)
        except ValueError:
            raise PanSurveyError(f"{BUDGET_ENV}={text!r}: expected a number of GB such as 16 or 0.5") from None
    if option_gb <= 0:
        raise PanSurveyError(f"memory budget {option_gb:g} GB: must be positive")
    return int(option_gb * GB)


def estimate(ref: ModelRef, settings: DetectSettings, *, on_gpu: bool = False, cpus: float = 1) -> MemoryEstimate:
    """Estimate one model's detect-task memory at ``settings``' batch size and image size, for a task
    with ``cpus`` CPUs (with two or more, a trained model's twin runs beside it: twice the activations)."""
    import torch

    from pipeline.settings import twin_beside
    from pipeline.sources import SOURCES

    source = SOURCES.get(ref.source)()
    try:
        with _time_limit(FORWARD_SECONDS):
            info = source.info(ref)
            with torch.device("meta"), _cheap_on_meta():
                model = source.build(ref)
    except (Exception, _TooSlow) as exc:  # some architectures cannot be built on the meta device
        return MemoryEstimate(None, None, None, None, None, note=f"not estimated: {type(exc).__name__}")
    params = sum(p.numel() for p in model.parameters())
    weights = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    size = info.preprocess.with_image_size(settings.image_size).input_size
    activation, macs = _meta_forward(model, (settings.batch_size, *size))
    act_total = ACTIVATION_COPIES * activation if activation is not None else 0
    host_weights = LOAD_COPIES * weights if ref.pretrained else weights
    twin = weights if ref.pretrained and settings.null else 0  # the null twin is built beside the model
    if twin and twin_beside("cuda" if on_gpu else "cpu", int(cpus)):
        act_total *= 2  # and measured at the same time (pipeline/null_twin.py, MeasuredBeside)
    host_weights += twin
    if on_gpu:  # weights load on the host, then move; activations live on the device
        host, device = host_weights, weights + twin + act_total
    else:
        host, device = host_weights + act_total, None
    note = None if activation is not None else "activations not estimated (meta forward failed)"
    return MemoryEstimate(params, weights, activation, max(MIN_BYTES, host) + TASK_BYTES, device, note, macs)


#: Ops whose result on a meta tensor is that tensor, or a tensor of its shape, dtype and layout:
#: weight initialisation (in-place fills) and elementwise normalisations and activations. On the
#: meta device each one otherwise runs torch's Python decomposition (timm's ``trunc_normal_``:
#: uniform, erfinv, mul, add, clamp; a BatchNorm: a dozen prims), which made the driver's estimate
#: of the eight bench_survey speed models cost 1.3 s of CPU (docs/scaling.md has the figure now).
#: Never ops that change a shape (``unsqueeze_``, ``resize_``, ``t_``).
_FILLS = frozenset(
    [
        "uniform_",
        "normal_",
        "fill_",
        "zero_",
        "copy_",
        "erfinv_",
        "mul_",
        "add_",
        "sub_",
        "div_",
        "clamp_",
        "clamp_min_",
        "clamp_max_",
        "exp_",
        "sqrt_",
        "abs_",
        "neg_",
        "bernoulli_",
        "random_",
        "exponential_",
        "log_normal_",
        "cauchy_",
        "geometric_",
        "trunc_",
        "kaiming_uniform_",
        "kaiming_normal_",
        "xavier_uniform_",
        "xavier_normal_",
        "trunc_normal_",
        "constant_",
        "ones_",
        "zeros_",
        "orthogonal_",
        "eye_",
        "dirac_",
        "lecun_normal_",
        "variance_scaling_",
    ]
)
_SAME_SHAPE = frozenset(
    [
        "batch_norm",
        "instance_norm",
        "layer_norm",
        "group_norm",
        "rms_norm",
        "relu",
        "relu_",
        "relu6",
        "gelu",
        "silu",
        "hardswish",
        "hardsigmoid",
        "sigmoid",
        "tanh",
        "mish",
        "elu",
        "leaky_relu",
        "hardtanh",
        "dropout",
    ]
)


def _cheap_on_meta() -> Any:
    """A torch function mode that answers :data:`_FILLS` and :data:`_SAME_SHAPE` on meta tensors
    without running them (built on call: it imports torch)."""
    import torch
    from torch.overrides import TorchFunctionMode

    class CheapOnMeta(TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
            kwargs = kwargs or {}
            name = getattr(func, "__name__", "")
            if name in _FILLS or name in _SAME_SHAPE:
                # torch.nn.init's functions pass their tensor as a keyword (``tensor=``)
                x = args[0] if args else next((v for v in kwargs.values() if isinstance(v, torch.Tensor)), None)
                if isinstance(x, torch.Tensor) and x.is_meta:
                    return x if name in _FILLS else torch.empty_like(x)
            return func(*args, **kwargs)

    return CheapOnMeta()


def _meta_forward(model: Any, shape: tuple[int, ...]) -> tuple[int | None, int | None]:
    """Bytes of the largest tensor any leaf module outputs for a meta input of ``shape``, and the
    multiply-accumulates of its convolutions and linear layers (None, None: the forward failed)."""
    import math

    import torch

    largest = macs = 0

    def hook(module: Any, _inputs: Any, output: Any) -> None:
        nonlocal largest, macs
        items = output if isinstance(output, tuple | list) else (output,)
        outputs = [t for t in items if isinstance(t, torch.Tensor)]
        for t in outputs:
            largest = max(largest, t.numel() * t.element_size())
        if outputs and isinstance(module, torch.nn.modules.conv._ConvNd):
            macs += outputs[0].numel() * module.in_channels // module.groups * math.prod(module.kernel_size)
        elif outputs and isinstance(module, torch.nn.Linear):
            macs += outputs[0].numel() * module.in_features

    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad(), _time_limit(FORWARD_SECONDS), _cheap_on_meta():
            model.eval()(torch.empty(shape, device="meta"))
    except (Exception, _TooSlow):
        return None, None
    finally:
        for h in handles:
            h.remove()
    return largest, macs


class _TooSlow(BaseException):
    pass


@contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """End the block with _TooSlow after ``seconds`` (main thread only; elsewhere no limit).

    The meta forward runs the model's own Python code on the driver: a forward that sleeps or
    waits on something (user code can) must not stall the survey.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def expire(_signum: int, _frame: Any) -> None:
        raise _TooSlow

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def node_memory() -> list[float]:
    """Each alive node's ``memory`` resource in bytes (what Ray can hand out to tasks)."""
    import ray

    return [float(n["Resources"].get("memory", 0)) for n in ray.nodes() if n.get("Alive")]


def no_room(est: MemoryEstimate, nodes: list[float], *, can_grow: bool) -> str | None:
    """Why no node can hold this model (a one-line failure message), or None when one can.

    On a cluster that can grow (autoscaler) a bigger node may still come: never refused here.
    """
    if est.host_bytes is None or not nodes or can_grow:
        return None
    largest = max(nodes)
    if est.host_bytes <= largest:
        return None
    return f"needs ~{fmt_gb(est.host_bytes)} of host memory, the largest node has {fmt_gb(largest)}"


def retry_request(est_bytes: int | None, nodes: list[float]) -> int | None:
    """The memory a task asks for on its one retry after an out-of-memory kill: the whole of the
    largest node, so it runs alone there (nothing else asking for memory runs beside it)."""
    if not nodes:
        return est_bytes
    return int(max(nodes))


def oom_message(exc: BaseException, asked: int | None) -> str:
    """One line for a task Ray's memory monitor killed: the estimate and the node's state.

    Ray's own text (a hundred lines naming the node's top memory users) goes to the survey log.
    """
    import re

    need = f" (estimated ~{fmt_gb(asked)})" if asked else ""
    m = re.search(r"was ([\d.]+)GB used / ([\d.]+)GB limit", str(exc))
    node = f", node at {float(m.group(1)):.1f} of {float(m.group(2)):.1f} GB" if m else ""
    return f"out of memory{need}: killed by Ray's memory monitor{node}"


#: GPU shares are rounded up to quarters (the default share is a quarter of one GPU).
SHARE_STEP = 0.25


def gpu_share_for(device_bytes: int | None, gpu_bytes: float | None, requested: float) -> tuple[float, str | None]:
    """The GPU share a model needs so its device memory fits its share of one GPU.

    Ray has no GPU-memory resource; the argued equivalent is the GPU share itself: with
    ``torch.cuda.set_per_process_memory_fraction`` capping each task to its share (issue 11,
    point 4), a model estimated at 60% of a GPU asks for 0.75 of it, and never sits beside
    three others. Returns (share, why it fits on no GPU or None). Unknown sizes keep ``requested``.
    """
    import math

    if not device_bytes or not gpu_bytes or requested <= 0 or requested >= 1:
        return requested, None
    if device_bytes > gpu_bytes:
        return requested, f"needs ~{fmt_gb(device_bytes)} of GPU memory, a GPU has {fmt_gb(gpu_bytes)}"
    need = math.ceil(device_bytes / gpu_bytes / SHARE_STEP) * SHARE_STEP
    return max(requested, min(1.0, need)), None


def gpu_memory(timeout: float = 30.0) -> float | None:
    """Total memory of one GPU of the cluster, read by a tiny task on a GPU node (None: unknown,
    e.g. no GPU node up yet, or logical GPUs without CUDA)."""
    import ray

    @ray.remote(num_cpus=0, num_gpus=0.01, max_retries=0)
    def probe() -> float | None:
        import torch

        return float(torch.cuda.get_device_properties(0).total_memory) if torch.cuda.is_available() else None

    ref = probe.remote()
    try:
        return ray.get(ref, timeout=timeout)
    except Exception:
        ray.cancel(ref, force=True)
        return None
