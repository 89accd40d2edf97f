"""The null twin: a model's architecture with untrained weights, run in the regime the model runs in.

A PAN count means something only next to what the same architecture shows without training.
A fresh network in eval mode is not that null: its normalisation layers hold the statistics they
were constructed with (mean 0, variance 1) for activations that never had them, so its maps are
far from normalised and the z-scores of some layers blow up (tf_efficientnet_lite0: 170 "PANs"
fresh, 0 once its BatchNorm statistics are recalibrated; docs/calibration.md). So the twin is

1. **built** with the source's own initialisation under a fixed seed, exactly as ``--random-init``
   builds the model (:func:`pipeline.sources.load_model` on :func:`pipeline.sources.twin_ref`); sources without an
   init of their own (``py:``, ``local-dir:``) call every module's ``reset_parameters()``;
2. **recalibrated** on the same probe the model is measured on (:func:`fitted_to_probe`, the one
   way for a twin and a ``--random-init`` model alike): every running-statistics norm (BatchNorm
   and any module with ``running_mean``/``running_var`` and a ``momentum``) normalises with the
   probe's statistics (a one-batch probe: in the detection pass itself; else the cumulative average
   over train-mode passes of the probe, then eval). A network without such norms
   is rescaled instead, LSUV-style: each convolution's and linear layer's weight (and bias) is
   divided by the standard deviation of its output on the probe, in forward order in one pass, so
   every layer's output has unit variance;
3. **checked**: :func:`activation_ratio` compares the twin's activation scale at the inputs of the
   padded convolutions with the trained model's (the tests assert it is near 1 after recalibration
   and far from it before, on the shared models).

``measure_null`` does all of it and runs the detector on the twin, for ``pans detect`` and each
survey task alike; :class:`MeasuredBeside` runs it beside the model's own detection where that is faster.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode

from pipeline.detect.layout import copied_channels_last, on_device, prefers_channels_last, to_fastest_layout
from pipeline.settings import NULL_VERSION, RECALIBRATION, null_settings, twin_beside  # noqa: F401  (defined there: no torch)
from pipeline.sources import load_model, null_model_id, twin_ref
from pipeline.sources.overwritten_fills import METADATA, DeferredFills, _storage, _tensors

# -- 1. build ---------------------------------------------------------------------------------


def reset_all_parameters(model: nn.Module) -> nn.Module:
    """PyTorch's default init on every module that has one (for sources without an init of their own)."""
    for module in model.modules():
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()
        if hasattr(module, "reset_running_stats"):
            module.reset_running_stats()
    return model


def build_twin(ref: Any, fetched: dict[str, Any] | None = None, *, defer_fills: bool = False) -> Any:
    """Load the twin of ``ref`` (a :class:`LoadedModel`), built as ``--random-init`` builds it.

    ``defer_fills``: its random draws are left to run later (:class:`DrawnBeside`).
    """
    return load_model(twin_ref(ref), fetched=fetched or None, defer_fills=defer_fills)


# -- 2. recalibrate ---------------------------------------------------------------------------


def running_stat_norms(model: nn.Module) -> list[nn.Module]:
    """Modules that normalise with stored running statistics updated by train-mode passes."""
    return [
        m
        for m in model.modules()
        if isinstance(getattr(m, "running_var", None), torch.Tensor) and hasattr(m, "momentum")
    ]


@dataclass(frozen=True)
class Recalibration:
    method: str  # running_stats | lsuv | none
    modules: int  # norms recalibrated, or layers rescaled


@torch.no_grad()
def recalibrate(model: nn.Module, images: torch.Tensor, *, batch_size: int = 16, device: Any = "cpu") -> Recalibration:
    """Fit the twin's normalisation to ``images`` (the probe); the model is left in eval mode on ``device``."""
    on_device(model.eval(), device)
    norms = running_stat_norms(model)
    if norms:
        return _running_stats(model, norms, images, batch_size, device)
    return _lsuv(model, images, batch_size, device)


def _running_stats(
    model: nn.Module, norms: list[nn.Module], images: torch.Tensor, batch_size: int, device: Any
) -> Recalibration:
    saved = [(m, m.momentum) for m in norms]
    for m in norms:
        if hasattr(m, "reset_running_stats"):
            m.reset_running_stats()
        m.train()  # only the norms: dropout and drop-path stay off
    try:
        for i, start in enumerate(range(0, images.shape[0], batch_size)):
            # Momentum 1/(i+1) makes ``running = (1-m) running + m batch`` the cumulative average
            # for any running-stat module (torch's momentum=None does the same, for BatchNorm only).
            for m in norms:
                m.momentum = 1.0 / (i + 1)
            model(images[start : start + batch_size].to(device))
    finally:
        for m, momentum in saved:
            m.momentum = momentum
        model.eval()
    return Recalibration("running_stats", len(norms))


def _lsuv(model: nn.Module, images: torch.Tensor, batch_size: int, device: Any) -> Recalibration:
    """One forward pass that rescales each conv/linear layer to unit output variance as it is reached."""
    layers = [m for m in model.modules() if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.Linear)]
    seen: set[int] = set()

    def rescale(module: nn.Module, _inputs: Any, output: Any) -> Any:
        if id(module) in seen or not isinstance(output, torch.Tensor):
            return None
        seen.add(id(module))
        std = float(output.float().std())
        if not math.isfinite(std) or std <= 1e-8:
            return None
        module.weight.div_(std)
        if getattr(module, "bias", None) is not None:
            module.bias.div_(std)
        return output / std

    hooks = [m.register_forward_hook(rescale) for m in layers]
    try:
        model(images[:batch_size].to(device))
    finally:
        for h in hooks:
            h.remove()
    return Recalibration("lsuv" if seen else "none", len(seen))


def _train_for_this_call(norm: nn.Module, _inputs: Any) -> None:
    norm.train(True)


def _eval_after_this_call(norm: nn.Module, _inputs: Any, _output: Any) -> None:
    norm.train(False)


@contextmanager
def fitted_to_probe(
    model: nn.Module, images: torch.Tensor, *, batch_size: int = 16, device: Any = "cpu", fresh: bool = False
) -> Iterator[Recalibration]:
    """The one way a model is put in its null regime, for a twin and a ``--random-init`` model alike.

    Inside the block the model's detection pass on ``images`` normalises as recalibration on the
    probe does. When the probe is one batch and every running-statistics norm is a torch BatchNorm,
    this costs no pass of its own: each norm switches to train mode just for its own forward call
    (dropout and drop-path stay off), so the detection pass normalises with the probe's statistics
    and stores them (cumulative average, torch's ``momentum=None``), which is what :func:`recalibrate`
    computes in a separate pass; afterwards (impact experiments on a random-init model) the model
    normalises with those stored statistics in eval mode. Otherwise (several batches, other running
    norms, LSUV) :func:`recalibrate` runs first. The model is left in eval mode on ``device``, in the
    layout detection runs it in (:mod:`pipeline.detect.layout`: on CPU a BatchNorm net is channels-last,
    where the probe's statistics cost almost nothing: resnet50 264 ms in NCHW, 101 ms in eval mode).
    ``fresh``: the norms hold the statistics they were built with (mean 0, variance 1, no batches),
    so the one-pass fit does not reset them first (a twin whose draws, these among them, still run
    beside it: :class:`DrawnBeside`).
    """
    to_fastest_layout(on_device(model.eval(), device), torch.device(device))
    norms = running_stat_norms(model)
    one_pass = (
        images.shape[0] <= batch_size
        and bool(norms)
        and all(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in norms)
    )
    if not one_pass:
        yield recalibrate(model, images, batch_size=batch_size, device=device)
        return
    saved = [(m, m.momentum) for m in norms]
    hooks = []
    for m in norms:
        if not fresh:
            m.reset_running_stats()
        m.momentum = None
        hooks.append(m.register_forward_pre_hook(_train_for_this_call))
        hooks.append(m.register_forward_hook(_eval_after_this_call))
    try:
        yield Recalibration("running_stats", len(norms))
    finally:
        for h in hooks:
            h.remove()
        for m, momentum in saved:
            m.momentum = momentum
        model.eval()


# -- 3. check the regime ----------------------------------------------------------------------


@torch.no_grad()
def conv_input_scales(model: nn.Module, images: torch.Tensor, *, batch_size: int = 16) -> dict[str, float]:
    """Standard deviation of each padded 2-d convolution's input on ``images`` (first call per layer)."""
    scales: dict[str, float] = {}
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and (any(p for p in _pads(m)) or m.__class__.__name__.endswith("Same")):

            def hook(module: nn.Module, inputs: Any, _out: Any, name: str = name) -> None:
                if name not in scales and inputs and isinstance(inputs[0], torch.Tensor):
                    scales[name] = float(inputs[0].float().std())

            hooks.append(m.register_forward_hook(hook))
    try:
        model.eval()
        model(images[:batch_size])
    finally:
        for h in hooks:
            h.remove()
    return scales


def _pads(conv: nn.Conv2d) -> tuple[int, ...]:
    p = conv.padding
    return (0,) if isinstance(p, str) else tuple(p)


def activation_ratio(trained: nn.Module, twin: nn.Module, images: torch.Tensor, *, batch_size: int = 16) -> float:
    """Median over padded convolutions of |log10(twin input std / trained input std)|.

    0 means the twin's activations have the trained model's scale layer by layer; 1 means a factor
    of ten off. A null in the right regime is well under 0.5 (tests/test_null_twin.py).
    """
    a = conv_input_scales(trained, images, batch_size=batch_size)
    b = conv_input_scales(twin, images, batch_size=batch_size)
    logs = sorted(
        abs(math.log10(b[k] / a[k])) for k in a if k in b and a[k] > 0 and b[k] > 0 and math.isfinite(b[k])
    )
    if not logs:
        return float("nan")
    return logs[len(logs) // 2]


# -- together ---------------------------------------------------------------------------------


@dataclass
class NullTwin:
    """The twin's detection (its neuron rows are stored as ``null_neurons``) and how it was made."""

    model_id: str  # e.g. timm:resnet50@random-init@224x224: architecture and input size
    neurons: Any  # pyarrow Table, NEURONS schema, model_id = the twin's id
    pans: int
    padded_neurons: int
    recalibration: Recalibration
    seconds: float


def measure_null(
    ref: Any,
    images: torch.Tensor,
    settings: Any,
    *,
    fetched: dict[str, Any] | None = None,
    twin: nn.Module | None = None,
) -> NullTwin:
    """Build (unless ``twin`` is given), recalibrate and measure the null twin of ``ref`` on ``images``.

    Run by :class:`MeasuredBeside` beside its model, it builds the twin without drawing its weights
    and hands the draws to the model's thread (:class:`DrawnBeside`).
    """
    from pipeline.detect import detect_pans
    from pipeline.detect.core import resolve_device

    started = time.perf_counter()
    device = resolve_device(settings.device)
    beside: MeasuredBeside | None = getattr(_twin_thread, "beside", None)
    drawn = None
    if twin is None:
        loaded = build_twin(ref, fetched, defer_fills=beside is not None)
        twin, deferred = loaded.model, loaded.deferred_fills
        del loaded  # no reference to the storages the draws fill before they are copied and freed
        if deferred is not None:  # measured beside its model: the draws go to the model's thread
            drawn = DrawnBeside(twin, deferred, channels_last=prefers_channels_last(twin, device))
            del deferred
            if beside is None or not beside.hand_over(drawn.draw):
                drawn.draw()
    nid = null_model_id(ref, int(images.shape[2]), int(images.shape[3]))
    fitting = fitted_to_probe(twin, images, batch_size=settings.batch_size, device=device, fresh=drawn is not None)
    with drawn.waiting() if drawn is not None else nullcontext(), fitting as how:
        result = detect_pans(
            twin,
            images,
            tau=settings.tau,
            batch_size=settings.batch_size,
            device=device,
            model_id=nid,
            config_id=settings.config_id,
            reference=settings.reference,
        )
    s = result.summary
    return NullTwin(nid, result.neurons, int(s["pans"]), int(s["padded_neurons"]), how, time.perf_counter() - started)


class DrawnBeside:
    """A twin whose random draws run on the model's thread while its own thread starts measuring it.

    Beside its model (:class:`MeasuredBeside`) the twin's side is the longer one: before its pass it
    draws its weights (resnet50: 0.12 s of a 0.19 s build; the generator is sequential, one thread)
    and makes them channels-last (0.04 s), and its pass fits BatchNorm statistics as well, while the
    model's side ends with a core idle. Here the twin's thread builds the modules only, gives each
    tensor whose fill is pending a new, empty storage in the layout detection reads it in, and
    starts its pass at once. The fills then run one at a time, in their recorded order, from the
    recorded random state (:class:`~pipeline.sources.overwritten_fills.DeferredFills`), each into
    the old storage and copied into the tensor's new one, which marks it ready: the model's thread
    runs them (:meth:`draw`, handed over), and inside :meth:`waiting` the twin's thread, reaching a
    storage not ready yet, runs the next ones itself until it is. So every value is the one a twin
    drawn first has (tests/test_null_twin.py compares them exactly); only which thread draws it, and
    when, changes. Where a pending storage is not exactly one whole tensor (a view into a larger
    one), nothing is swapped: the fills run into the storages the model reads, which are waited for.
    """

    def __init__(self, model: nn.Module, deferred: DeferredFills, *, channels_last: bool) -> None:
        self._fills: list[Any] = list(deferred.fills)
        self._generator = deferred.generator()
        self._next = 0  # index of the next fill to run
        self._drawing = threading.Lock()  # one fill at a time, in order, on either thread
        self._ready = threading.Condition()
        self._error: BaseException | None = None
        self._targets: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # pending storage -> (old, new)
        pending = {key for key, *_ in deferred.fills}
        # Storages the model reads whose fill has not run yet: every pending one (a tensor the model
        # holds outside its parameters and buffers, a plain attribute, is read where it is), and
        # below, the new storage of each tensor given one.
        self.waiting_for: set[int] = set(pending)
        owners: dict[int, list[torch.Tensor]] = {}
        for t in [*model.parameters(), *model.buffers()]:
            key = _storage(t)
            if key in pending:
                owners.setdefault(key, []).append(t)
        if not all(_whole(t) for ts in owners.values() for t in ts):
            return
        swapped: dict[int, torch.Tensor] = {}  # id(a tensor object given new storage) -> its old storage
        for key, ts in owners.items():
            old = ts[0].data
            # The layout to_fastest_layout would give it (the same strides: the same convolution path).
            layout = channels_last and isinstance(ts[0], nn.Parameter) and copied_channels_last(old)
            new = torch.empty_like(old, memory_format=torch.channels_last if layout else torch.preserve_format)
            for t in ts:
                swapped[id(t)] = old
                t.data = new  # tied tensors keep sharing one storage
            self._targets[key] = (old, new)
            self.waiting_for.add(_storage(new))  # type: ignore[arg-type]  (and the old one: an alias may read it)
        # A fill recorded on one of those tensor objects now fills its old storage instead.
        self._fills = [(key, f, *_retarget(args, kwargs, swapped), grad) for key, f, args, kwargs, grad in self._fills]

    def _draw_next(self) -> bool:
        """Run the next fill (False: none left); a failure also ends every wait for it."""
        with self._drawing:
            if self._next >= len(self._fills) or self._error is not None:
                return False
            fill = self._fills[self._next]
            assert fill is not None
            key = fill[0]
            try:
                DeferredFills.call(fill, self._generator)
                target = self._targets.pop(key, None)
                if target is not None:
                    target[1].copy_(target[0])
            except BaseException as exc:
                with self._ready:
                    self._error = exc
                    self._ready.notify_all()
                raise
            self._fills[self._next] = None  # its old storage is freed now: the weights are not held twice
            self._next += 1
            del fill
        with self._ready:
            self.waiting_for.discard(key)
            if target is not None:
                self.waiting_for.discard(_storage(target[1]))  # type: ignore[arg-type]
            self._ready.notify_all()
        return True

    def draw(self) -> None:
        """Run every fill not run yet (the model's thread, or the twin's where nobody took it)."""
        while self._draw_next():
            pass

    def wait(self, keys: set[int]) -> None:
        """Return once none of these storages waits for its draw, drawing meanwhile (raise if drawing failed)."""
        while True:
            with self._ready:
                if self._error is not None:
                    raise RuntimeError("drawing the null twin's weights failed") from self._error
                if keys.isdisjoint(self.waiting_for):
                    return
            if not self._draw_next():
                with self._ready:  # another thread's last draw may be marking it ready now
                    self._ready.wait_for(lambda: self._error is not None or keys.isdisjoint(self.waiting_for), 5.0)
                    if self._error is None and not keys.isdisjoint(self.waiting_for):
                        raise RuntimeError("a null twin's weight was read that none of its draws fills")

    def waiting(self) -> _AwaitDraws:
        """The twin's side of the hand-over: a torch function mode for its thread (see the class)."""
        return _AwaitDraws(self)


def _whole(t: torch.Tensor) -> bool:
    """Whether ``t`` is exactly its storage (so new storage can stand in for it)."""
    return t.storage_offset() == 0 and t.numel() * t.element_size() == t.untyped_storage().nbytes()


def _retarget(args: tuple, kwargs: dict, swapped: dict[int, torch.Tensor]) -> tuple[tuple, dict]:
    """A fill's arguments with each swapped tensor object replaced by its old storage."""
    args = tuple(swapped.get(id(a), a) if isinstance(a, torch.Tensor) else a for a in args)
    kwargs = {k: swapped.get(id(v), v) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    return args, kwargs


class _AwaitDraws(TorchFunctionMode):
    """Any op reading a storage whose draw has not run yet waits for it (metadata reads do not)."""

    def __init__(self, drawn: DrawnBeside) -> None:
        super().__init__()
        self.drawn = drawn

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        if self.drawn.waiting_for and getattr(func, "__name__", "") not in METADATA:
            keys = {_storage(t) for t in _tensors(args, kwargs)}
            if not keys.isdisjoint(self.drawn.waiting_for):
                self.drawn.wait(keys)  # type: ignore[arg-type]
        return func(*args, **kwargs)


#: On the thread :class:`MeasuredBeside` measures a twin in: ``beside``, that MeasuredBeside.
_twin_thread = threading.local()


class MeasuredBeside:
    """Runs ``measure`` (a null twin's measurement) beside the block that measures the model itself.

    Two detections, each with half of the CPU's torch threads, take less wall time than one after the
    other with all of them: the serial parts of each (the twin's random init is one thread drawing
    normals; the detector's per-layer Python and small reductions) run while the other computes.
    resnet50, batch 16, 2 threads: detect + twin 2.51x a plain forward one after the other, 2.24-2.39x
    beside in eleven bench runs (docs/method.md, sixth session: with the twin's draws handed over).
    Each side keeps its thread count to the end. Handing the threads of the side that ends first to
    the other (tried: about 3% faster on resnet50) made the twin's float sums depend on when that
    happened, so a twin measured again differed from the stored one (by ~1e-6; caught by
    tests/test_reliability_nulls.py): results must not depend on timing.
    What is deterministic can still move between the sides: a twin that :func:`measure_null` builds
    here hands its weight draws to the block's thread (:meth:`hand_over`, :class:`DrawnBeside`),
    which runs them at its next module call (a global forward pre-hook, for the block's thread only)
    or, at the latest, when the block ends; the values do not depend on when.
    The price: both passes' activations are alive at once, which the survey's memory estimate counts
    (pipeline/survey/memory.py). Elsewhere (:func:`pipeline.settings.twin_beside` false: a GPU, one thread)
    :meth:`result` runs ``measure`` when asked, as it would without this class.

    ``with MeasuredBeside(measure, device) as beside: <detect the model>`` then ``beside.result()``.
    An exception in ``measure`` is raised by :meth:`result`; when the block raises, the twin is waited
    for (a survey worker must not start its next model beside a twin still running) but not read.
    """

    def __init__(self, measure: Callable[[], NullTwin], device: torch.device) -> None:
        self._measure = measure
        self._threads = torch.get_num_threads()
        self._beside = twin_beside(device.type, self._threads)
        self._thread: threading.Thread | None = None
        self._twin: NullTwin | None = None
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._work: Callable[[], None] | None = None  # handed over by the twin's thread, not run yet
        self._closing = False
        self._block_thread: int | None = None
        self._hook: Any = None
        self.ran_on_block_thread = 0  # works handed over and run by the block's thread
        self.lent_seconds = 0.0  # of which run during the block's module calls (its own timings include them)

    def _run(self, threads: int | None = None) -> None:
        try:
            if threads is not None:
                torch.set_num_threads(threads)
                _twin_thread.beside = self
            self._twin = self._measure()
        except BaseException as exc:  # raised again by result(), in the caller's thread
            self._error = exc
        finally:
            _twin_thread.beside = None

    def hand_over(self, work: Callable[[], None]) -> bool:
        """Called on the twin's thread: have the block's thread run ``work`` (False: the block has
        ended, run it yourself). ``work`` must give the same results on either thread."""
        with self._lock:
            if self._closing or self._work is not None:
                return False
            self._work = work
            return True

    def _run_work(self) -> None:
        with self._lock:
            work, self._work = self._work, None
        if work is not None:
            self.ran_on_block_thread += 1
            with suppress(Exception):  # the work reports its failure to the twin's thread (DrawnBeside.draw)
                work()

    def _at_module_call(self, _module: nn.Module, _inputs: Any) -> None:
        if self._work is not None and threading.get_ident() == self._block_thread:
            started = time.perf_counter()
            self._run_work()
            self.lent_seconds += time.perf_counter() - started

    def __enter__(self) -> MeasuredBeside:
        if self._beside:
            half = max(1, self._threads // 2)
            torch.set_num_threads(half)
            self._block_thread = threading.get_ident()
            self._hook = torch.nn.modules.module.register_module_forward_pre_hook(self._at_module_call)
            self._thread = threading.Thread(target=self._run, args=(half,), name="null-twin", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if self._thread is None:
            return
        self._hook.remove()
        with self._lock:
            self._closing = True
        if kind is None or issubclass(kind, Exception):  # not on Ctrl-C: the daemon thread dies with the process
            self._run_work()  # what the twin's thread waits for, if the block's modules never ran it
            self._thread.join()
        torch.set_num_threads(self._threads)

    def result(self) -> NullTwin:
        """The twin (measured now where it was not measured beside the block)."""
        if not self._beside and self._twin is None and self._error is None:
            self._run()
        if self._error is not None:
            raise self._error
        assert self._twin is not None, "result() before the block ended"
        return self._twin
