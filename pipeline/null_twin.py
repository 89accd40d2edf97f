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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from pipeline.settings import NULL_VERSION, RECALIBRATION, null_settings, twin_beside  # noqa: F401  (defined there: no torch)
from pipeline.sources import load_model, null_model_id, twin_ref

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


def build_twin(ref: Any, fetched: dict[str, Any] | None = None) -> Any:
    """Load the twin of ``ref`` (a :class:`LoadedModel`), built as ``--random-init`` builds it."""
    return load_model(twin_ref(ref), fetched=fetched or None)


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
    model.eval().to(device)
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
    model: nn.Module, images: torch.Tensor, *, batch_size: int = 16, device: Any = "cpu"
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
    """
    from pipeline.detect.layout import to_fastest_layout

    to_fastest_layout(model.eval().to(device), torch.device(device))
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
    """Build (unless ``twin`` is given), recalibrate and measure the null twin of ``ref`` on ``images``."""
    import time

    from pipeline.detect import detect_pans
    from pipeline.detect.core import resolve_device

    started = time.perf_counter()
    if twin is None:
        twin = build_twin(ref, fetched).model
    device = resolve_device(settings.device)
    nid = null_model_id(ref, int(images.shape[2]), int(images.shape[3]))
    with fitted_to_probe(twin, images, batch_size=settings.batch_size, device=device) as how:
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


class MeasuredBeside:
    """Runs ``measure`` (a null twin's measurement) beside the block that measures the model itself.

    Two detections, each with half of the CPU's torch threads, take less wall time than one after the
    other with all of them: the serial parts of each (the twin's random init is one thread drawing
    normals; the detector's per-layer Python and small reductions) run while the other computes.
    resnet50, batch 16, 2 threads, six bench runs: detect + twin 2.55-2.74x a plain forward one after
    the other, 2.31-2.61x beside (median 2.44); mobilenetv3_large_100 4.41 -> 3.93x (docs/method.md).
    Each side keeps its thread count to the end. Handing the threads of the side that ends first to
    the other (tried: about 3% faster on resnet50) made the twin's float sums depend on when that
    happened, so a twin measured again differed from the stored one (by ~1e-6; caught by
    tests/test_reliability_nulls.py): results must not depend on timing.
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

    def _run(self, threads: int | None = None) -> None:
        try:
            if threads is not None:
                torch.set_num_threads(threads)
            self._twin = self._measure()
        except BaseException as exc:  # raised again by result(), in the caller's thread
            self._error = exc

    def __enter__(self) -> MeasuredBeside:
        if self._beside:
            half = max(1, self._threads // 2)
            torch.set_num_threads(half)
            self._thread = threading.Thread(target=self._run, args=(half,), name="null-twin", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if self._thread is None:
            return
        if kind is None or issubclass(kind, Exception):  # not on Ctrl-C: the daemon thread dies with the process
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
