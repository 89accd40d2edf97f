"""Skip the random fills a model's own init, or its checkpoint, overwrites before anything reads them.

Building a network at random init draws its weights twice: every ``nn.Conv2d`` and ``nn.Linear``
fills itself with PyTorch's default init as it is constructed, then the model's init (timm's
``kaiming_normal_``, ``trunc_normal_``, ...) fills most of them again. The first draw is never
read. For resnet50 it is 23.5 M uniform numbers, 0.12 s of the 0.26 s a twin takes to build, paid
for every null twin and every ``--random-init`` model (docs/method.md). Loading a checkpoint draws
every init only for ``load_state_dict`` to copy the checkpoint over it: a ``copy_`` over a whole
tensor drops its recorded fill too (resnet50 loads in 0.09 s instead of 0.29 s; bench/bench_load.py).

:func:`overwritten_fills_skipped` is a torch function mode for the construction: a fill that
overwrites a whole tensor (``uniform_``, ``normal_``, ``fill_``, ``nn.init.kaiming_uniform_``, ...)
is recorded, not run; a later whole fill of the same storage replaces it (the skipped draw); any
other use of that storage (a read, a view, an in-place update, a copy) first runs its recorded
fill, and the end of the block runs the rest in the order they were made. So every value a model
ends with is drawn from the distribution its init says, and nothing reads a value before it is
drawn; only the position in the random stream moves (the weights differ from an eager build
under the same seed, the same in every run: ``NULL_VERSION`` 3). A checkpoint's values are copied
as they are. ``py:`` factories, whose code may draw or train the weights it returns, build their
trained models without this mode (``Source.checkpoint_weights``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.init as init
from torch.overrides import TorchFunctionMode

_T = torch.Tensor
#: In-place ops whose result does not depend on the tensor's values: a whole tensor's worth of them
#: overwrites what was there.
FILLS = {
    _T.uniform_, _T.normal_, _T.zero_, _T.fill_, _T.random_, _T.exponential_, _T.geometric_,
    _T.log_normal_, _T.cauchy_, _T.bernoulli_,
    init.uniform_, init.normal_, init.trunc_normal_, init.constant_, init.kaiming_uniform_,
}  # fmt: skip
#: Ops that read a tensor's metadata, never its values (a property getter: shape, dtype, .data, ...).
METADATA = {"dim", "size", "numel", "stride", "storage_offset", "is_contiguous", "element_size", "__get__",
            "is_floating_point", "data_ptr", "untyped_storage", "__len__"}


def _tensors(args: tuple, kwargs: dict) -> Iterator[torch.Tensor]:
    """The tensors among a call's arguments, also inside lists and tuples (``torch.cat``)."""
    for a in (*args, *kwargs.values()):
        if isinstance(a, torch.Tensor):
            yield a
        elif isinstance(a, list | tuple):
            yield from (t for t in a if isinstance(t, torch.Tensor))


def _storage(t: torch.Tensor) -> int | None:
    """The address of ``t``'s storage (the key of a recorded fill); None where it has none."""
    if t.numel() == 0 or t.device.type == "meta" or t.layout != torch.strided:
        return None
    try:
        return t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):
        return None


def _covers_its_storage(t: torch.Tensor) -> bool:
    return (
        t.storage_offset() == 0
        and t.is_contiguous()
        and t.numel() * t.element_size() == t.untyped_storage().nbytes()
    )


class _SkipOverwrittenFills(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        # storage address -> (fill, args, kwargs, grad mode): in the order they were recorded
        self.pending: dict[int, tuple[Any, tuple, dict, bool]] = {}
        self.skipped = 0  # fills not run: overwritten by another fill or by a copy
        self.copied_over = 0  # of which by a copy (a checkpoint's values)
        self.deferred: DeferredFills | None = None  # the fills left at the end of a deferring block

    def flush(self, keys: set[int] | None = None) -> None:
        """Run the recorded fills of these storages (all: None), oldest first."""
        for key in [k for k in self.pending if keys is None or k in keys]:
            func, args, kwargs, grad = self.pending.pop(key)
            with torch.set_grad_enabled(grad):
                func(*args, **kwargs)

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        if getattr(func, "__name__", "") in METADATA:
            return func(*args, **kwargs)
        if func in FILLS:
            target = args[0] if args else kwargs.get("tensor")
            others = [t for t in _tensors(args[1:], kwargs) if t is not target]
            key = _storage(target) if isinstance(target, torch.Tensor) else None
            if key is not None and not others and _covers_its_storage(target):
                if key in self.pending:
                    del self.pending[key]  # overwritten before anything read it
                    self.skipped += 1
                self.pending[key] = (func, args, kwargs, torch.is_grad_enabled())
                return target
        if func is _T.copy_ and self.pending and isinstance(args[0], torch.Tensor):
            # A checkpoint's values copied over a whole init (load_state_dict): the init is never read.
            key = _storage(args[0])
            sources = {_storage(t) for t in _tensors(args[1:], kwargs)}
            if key in self.pending and key not in sources and _covers_its_storage(args[0]):
                del self.pending[key]
                self.skipped += 1
                self.copied_over += 1
        if self.pending:
            read = {_storage(t) for t in _tensors(args, kwargs)}
            if not read.isdisjoint(self.pending):
                self.flush(read)
        return func(*args, **kwargs)


#: The fills that draw random numbers (they take a ``generator``).
DRAWS = FILLS - {_T.zero_, _T.fill_, init.constant_}


@dataclass
class DeferredFills:
    """The fills a build left recorded, to run later, in their order, from the random state they had.

    What a null twin's build hands to the thread beside it (pipeline/null_twin.py). The draws use a
    generator of their own set to the recorded state, so every tensor gets exactly the values the
    block's own end would have given it, whichever thread runs them, and nothing else's random
    state is touched.
    """

    fills: list[tuple[int, Any, tuple, dict, bool]]  # (storage address, fill, args, kwargs, grad mode)
    rng_state: torch.Tensor  # the CPU generator's state at the end of the block

    def generator(self) -> torch.Generator:
        g = torch.Generator()
        g.set_state(self.rng_state)
        return g

    @staticmethod
    def call(fill: tuple[int, Any, tuple, dict, bool], generator: torch.Generator) -> None:
        """Run one recorded fill, drawing from ``generator``."""
        _key, func, args, kwargs, grad = fill
        if func in DRAWS and kwargs.get("generator") is None:
            kwargs = {**kwargs, "generator": generator}
        with torch.set_grad_enabled(grad):
            func(*args, **kwargs)


@contextmanager
def overwritten_fills_skipped(*, defer: bool = False) -> Iterator[_SkipOverwrittenFills]:
    """Within the block, whole-tensor fills overwritten before any read are not run (see the module).

    The fills still recorded at its end run then; after an error in the block they are dropped with
    the half-built model (a build that ran out of memory must not draw its remaining weights first).
    With ``defer`` they are not run but left in ``mode.deferred`` (:class:`DeferredFills`), with the
    random state to run them from: the built model must not be read before they have run.
    """
    mode = _SkipOverwrittenFills()
    with mode:
        yield mode
    if defer:
        fills = [(key, *fill) for key, fill in mode.pending.items()]
        mode.deferred = DeferredFills(fills, torch.get_rng_state())
        mode.pending = {}
    else:
        mode.flush()
