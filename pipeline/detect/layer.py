"""One convolution layer: its padding geometry and the running per-neuron statistics.

Everything is reduced inside the forward pass to a few numbers per output channel, accumulated
in float64 across probe batches (Chan's parallel variance), so no activation map is kept.

Own padding response: (output with the layer's padding) - (output with a neutral reference
padding). The default reference is *replicate* (each padded position holds its nearest input
pixel: the border carries no signal of its own); ``mean`` fills it with the input channel's mean.
Because the convolution is linear, the difference is the convolution of D = (padded input -
reference), which is zero everywhere but the padded region. So we build D only on the thin
border strips that can see it, on the batch-mean strip rather than every image, and (the mean
response over a strip being the weight applied to the strip's mean receptive window) take one
weight-times-window product per layer for all sides instead of a convolution per strip.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pipeline.detect.classify import CONSTANT_MODES
from pipeline.detect.geometry import AxisGeometry, ConvGeometry, torch_same_padding
from pipeline.detect.tracer import ConvCall
from pipeline.schema import SIDES

#: Fewest interior output positions a layer needs to be measured. Below this the neuron's spread
#: (the scale of every z-score) rests on a handful of values per image, and such layers (the last
#: stage of a network probed at a small image size) dominated PAN counts with unstable z-scores.
MIN_INTERIOR_POSITIONS = 4
#: Reference paddings for own_z: ``replicate`` (nearest input pixel) or ``mean`` (channel mean).
REFERENCES = ("replicate", "mean")


@dataclass(frozen=True)
class LayerInfo:
    """Static description of a convolution call (the ``layers`` table row, minus results)."""

    layer: str
    index: int
    module_type: str
    in_channels: int
    out_channels: int
    groups: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    explicit: tuple[int, int, int, int]  # padding applied by F.pad before the conv (t, b, l, r)
    internal: tuple[int, int, int, int]  # zero padding the conv call itself applies
    padding_kind: str
    padding_mode: str
    pad_value: float
    in_size: tuple[int, int]  # unpadded input
    geometry: ConvGeometry

    @property
    def pads(self) -> tuple[int, int, int, int]:
        return tuple(e + i for e, i in zip(self.explicit, self.internal, strict=True))  # type: ignore[return-value]

    @property
    def conv_type(self) -> str:
        if self.groups == 1:
            return "standard"
        if self.groups == self.in_channels:
            return "depthwise"
        return "grouped"

    @property
    def in_scope(self) -> bool:
        return any(self.geometry.strips().values())

    @property
    def skip_reason(self) -> str | None:
        if not self.in_scope:
            return "reads no padding"
        h, w = self.geometry.out_shape
        if not self.geometry.has_interior:
            return f"no interior: every position of the {h}x{w} output reads padding"
        ri, ci = self.geometry.interior_slice()
        positions = (ri.stop - ri.start) * (ci.stop - ci.start)
        if positions < MIN_INTERIOR_POSITIONS:
            return (
                f"interior too small: {positions} of the {h}x{w} output's positions read no padding "
                f"(at least {MIN_INTERIOR_POSITIONS} needed to estimate a neuron's spread)"
            )
        return None

    @classmethod
    def from_call(cls, call: ConvCall, index: int) -> LayerInfo:
        x, w = call.x, call.weight
        kh, kw = int(w.shape[2]), int(w.shape[3])
        explicit = call.pad.pads if call.pad is not None else (0, 0, 0, 0)
        hp, wp = int(x.shape[2]), int(x.shape[3])
        in_h, in_w = hp - explicit[0] - explicit[1], wp - explicit[2] - explicit[3]
        if call.padding == "same":
            (t, b), (left, r) = torch_same_padding(kh, call.dilation[0]), torch_same_padding(kw, call.dilation[1])
            internal = (t, b, left, r)
        elif call.padding == "valid":
            internal = (0, 0, 0, 0)
        else:
            ph, pw = call.padding  # type: ignore[misc]
            internal = (ph, ph, pw, pw)
        mode, value = "zeros", 0.0
        own_module = call.pad is not None and call.pad.module == call.layer.split("@")[0]
        if call.pad is not None and any(explicit):
            mode = call.pad.mode
            value = call.pad.value
            if mode == "constant":
                mode = "zeros" if value == 0.0 else "constant"
        pads = tuple(e + i for e, i in zip(explicit, internal, strict=True))
        if not any(pads):
            kind = "none"
        elif call.padding == "same":
            kind = "same"
        elif call.pad is not None and any(explicit) and not own_module:
            kind = "explicit"
        elif call.pad is not None and any(explicit) and mode in CONSTANT_MODES:
            kind = "dynamic_same"  # padded inside the conv's own forward (timm Conv2dSame)
        else:
            kind = "symmetric" if pads[0] == pads[1] and pads[2] == pads[3] else "asymmetric"
        geometry = ConvGeometry(
            AxisGeometry(in_h, kh, call.stride[0], call.dilation[0], pads[0], pads[1]),
            AxisGeometry(in_w, kw, call.stride[1], call.dilation[1], pads[2], pads[3]),
        )
        module_type = type(call.module).__name__ if call.module is not None else "functional"
        return cls(
            layer=call.layer,
            index=index,
            module_type=module_type,
            in_channels=int(w.shape[1]) * call.groups,
            out_channels=int(w.shape[0]),
            groups=call.groups,
            kernel=(kh, kw),
            stride=call.stride,
            dilation=call.dilation,
            explicit=explicit,
            internal=internal,
            padding_kind=kind,
            padding_mode=mode,
            pad_value=value,
            in_size=(in_h, in_w),
            geometry=geometry,
        )


def _input_span(axis: AxisGeometry, out: slice) -> tuple[int, int]:
    """Padded-coordinate range [start, stop) of the input that output positions ``out`` read."""
    span = axis.dilation * (axis.kernel - 1) + 1
    return out.start * axis.stride, (out.stop - 1) * axis.stride + span


#: A per-image sum of squares is trusted in float32 while it is at most this many times the sum
#: of squared deviations (float32 keeps ~7 digits, so at most ~2 are lost to the cancellation).
CANCELLATION_LIMIT = 100.0


def _moments(interior: torch.Tensor) -> tuple[int, torch.Tensor, torch.Tensor]:
    """Count, per-channel mean and sum of squared deviations (float64) of an (N, C, h, w) view.

    Why not ``torch.var_mean`` over (0, 2, 3): its Welford loop cost about half the convolution
    itself on large maps. Per image and channel, a float32 sum and a sum of squares (two fast
    vectorised reductions over the contiguous rows) give the mean and spread; images are then
    combined in float64. Where the mean dominates the spread, the sum of squares would lose
    digits, so those channels are recomputed with ``var_mean`` (few: near-constant neurons).
    """
    n, c, h, w = interior.shape
    hw = h * w
    if interior.stride(1) == 1 and c > 1:
        # Channels-last (pipeline/detect/layout.py): reducing over a crop whose channels are the
        # innermost dimension is 2-10x slower than over a dense copy of it (resnet50's 56x56 maps:
        # 8.1 against 4.8 ms with the copy); the copy is squared in place for the second sum.
        dense = interior.clone(memory_format=torch.channels_last)
        s = dense.sum(dim=(2, 3)).double()
        q = dense.square_().sum(dim=(2, 3)).double()
        del dense
    else:
        s = interior.sum(dim=(2, 3)).double()  # (N, C)
        q = torch.linalg.vector_norm(interior, dim=(2, 3)).double().square()
    mean_nc = s / hw
    m2_nc = q - s * mean_nc
    risky = (q > CANCELLATION_LIMIT * m2_nc).any(dim=0)
    if bool(risky.any()):
        ch = risky.nonzero().squeeze(1)
        var, mean = torch.var_mean(interior.index_select(1, ch), dim=(2, 3), correction=0)
        mean_nc[:, ch] = mean.double()
        m2_nc[:, ch] = var.double() * hw
    mean = mean_nc.mean(dim=0)
    m2 = m2_nc.sum(dim=0) + hw * (mean_nc - mean).square().sum(dim=0)
    return n * hw, mean, m2


def _select(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``x[:, :, rows][:, :, :, cols]`` for index vectors (edge indices may repeat)."""
    return x.index_select(2, rows).index_select(3, cols)


@dataclass(frozen=True)
class _StripPlan:
    """What one side's own-response update reads, fixed by the layer's geometry (built once).

    ``x[:, :, r0:r1, c0:c1]`` is the part of the conv's input the strip touches; ``rows``/``cols``
    index it to build the strip as padded (``band``: the conv's own zero padding), ``ref_rows``/
    ``ref_cols`` to build the replicate reference, ``pad`` marks the padding (where D lives).
    """

    side: str
    r0: int
    r1: int
    c0: int
    c1: int
    rows: torch.Tensor
    cols: torch.Tensor
    band: torch.Tensor
    ref_rows: torch.Tensor
    ref_cols: torch.Tensor
    not_pad: torch.Tensor


def _strip_plans(info: LayerInfo, device: torch.device) -> list[_StripPlan]:
    g = info.geometry
    et, eb, el, er = info.explicit
    it, il = info.internal[0], info.internal[2]
    h, w = info.in_size
    xh, xw = h + et + eb, w + el + er  # x holds any explicit padding
    top, left = it + et, il + el  # where the unpadded input starts, in fully padded coords
    plans = []
    for side, (rs, cs) in g.side_slices().items():
        if rs.stop <= rs.start or cs.stop <= cs.start:
            continue
        r0, r1 = _input_span(g.rows, rs)
        c0, c1 = _input_span(g.cols, cs)
        rows, cols = torch.arange(r0, r1), torch.arange(c0, c1)
        xr, xc = rows - it, cols - il  # x's coordinates
        xr0, xr1 = max(r0 - it, 0), min(r1 - it, xh)
        xc0, xc1 = max(c0 - il, 0), min(c1 - il, xw)
        band = ((xr < 0) | (xr >= xh)).view(-1, 1) | ((xc < 0) | (xc >= xw)).view(1, -1)
        pad = ((rows < top) | (rows >= top + h)).view(-1, 1) | ((cols < left) | (cols >= left + w)).view(1, -1)
        plans.append(
            _StripPlan(
                side, xr0, xr1, xc0, xc1,
                rows=(xr.clamp(0, xh - 1) - xr0).to(device),
                cols=(xc.clamp(0, xw - 1) - xc0).to(device),
                band=band.to(device),
                ref_rows=(rows.clamp(top, top + h - 1) - it - xr0).to(device),
                ref_cols=(cols.clamp(left, left + w - 1) - il - xc0).to(device),
                not_pad=(~pad).to(device),
            )
        )
    return plans


class LayerStats:
    """Running per-channel statistics of one convolution layer across probe batches."""

    def __init__(self, info: LayerInfo, device: torch.device, reference: str = "replicate") -> None:
        if reference not in REFERENCES:
            raise ValueError(f"unknown reference padding {reference!r} (use {', '.join(REFERENCES)})")
        self.info = info
        self.reference = reference
        k = info.out_channels
        z = lambda: torch.zeros(k, dtype=torch.float64, device=device)  # noqa: E731
        self.n = 0  # interior samples per channel
        self.mean = z()
        self.m2 = z()
        self.side_sum = {s: z() for s in SIDES}
        self.side_n = dict.fromkeys(SIDES, 0)
        self.own_sum = {s: z() for s in SIDES}
        self.images = 0
        self.weight: torch.Tensor | None = None
        self.plans = _strip_plans(info, device)

    # The per-batch update -----------------------------------------------------------------
    @torch.no_grad()
    def update(self, call: ConvCall) -> None:
        g = self.info.geometry
        y = call.out
        if self.weight is None:
            self.weight = call.weight.detach()
        n_img = int(y.shape[0])
        self.images += n_img
        ri, ci = g.interior_slice()
        n_b, mean, m2 = _moments(y[:, :, ri, ci])
        delta = mean - self.mean
        total = self.n + n_b
        self.mean += delta * (n_b / total)
        self.m2 += m2 + delta.pow(2) * (self.n * n_b / total)
        self.n = total
        for side, (rs, cs) in g.side_slices().items():
            region = y[:, :, rs, cs]
            if region.numel():
                self.side_sum[side] += region.sum(dim=(0, 2, 3), dtype=torch.float64)
                self.side_n[side] += region.shape[0] * region.shape[2] * region.shape[3]
        self._update_own(call, n_img)

    def _update_own(self, call: ConvCall, n_img: int) -> None:
        """Add this batch's own padding response per side (see the module docstring).

        Each side's strip reads that side's padding only (no corners), so D on the input region
        its positions read is non-zero only in that side's padding band.
        """
        x = call.x
        mu = None
        if self.reference == "mean":
            et, eb, el, er = self.info.explicit
            unpadded = x[:, :, et : x.shape[2] - eb, el : x.shape[3] - er]
            mu = unpadded.mean(dim=(0, 2, 3), dtype=torch.float64).to(x.dtype).view(1, -1, 1, 1)
        if not self.plans:
            return
        windows = []
        for p in self.plans:
            # The batch mean of the input the strip touches (linearity: the batch-mean response is
            # the response to the batch-mean strip, one image's cost).
            xbar = x[:, :, p.r0 : p.r1, p.c0 : p.c1].mean(dim=0, keepdim=True)
            # The strip as the layer pads it (explicit pad from x, the conv's own band as zeros) ...
            actual = _select(xbar, p.rows, p.cols).masked_fill_(p.band, 0.0)
            # ... and with the reference padding; they differ only where the strip is padding.
            reference = mu if mu is not None else _select(xbar, p.ref_rows, p.ref_cols)
            d = (actual - reference).masked_fill_(p.not_pad, 0.0)
            # Linearity once more: the mean response over the strip is the weight applied to the
            # mean receptive window, so no strip convolution (whose per-call weight set-up cost
            # more than the arithmetic) is needed, and all sides share one product.
            cols = F.unfold(d, self.info.kernel, dilation=self.info.dilation, stride=self.info.stride)
            windows.append(cols.mean(dim=2))  # (1, C * kh * kw)
        w = call.weight
        groups = self.info.groups
        k = w.shape[0]
        mean_window = torch.cat(windows).view(len(windows), groups, -1)  # (S, G, Cg * kh * kw)
        own = torch.einsum("gkt,sgt->sgk", w.reshape(groups, k // groups, -1), mean_window)
        own = own.reshape(len(windows), k).double() * n_img
        for p, resp in zip(self.plans, own, strict=True):
            self.own_sum[p.side] += resp

    # Final numbers ---------------------------------------------------------------------------
    def finish(self) -> dict[str, torch.Tensor]:
        """Per-channel results on CPU: scale, interior_mean, own/obs per side (NaN: no strip)."""
        scale = (self.m2 / max(self.n, 1)).sqrt()
        out: dict[str, torch.Tensor] = {"scale": scale.cpu(), "interior_mean": self.mean.cpu()}
        nan = torch.full_like(scale, float("nan"))
        for side in SIDES:
            if self.side_n[side]:
                own = self.own_sum[side] / self.images
                obs = self.side_sum[side] / self.side_n[side] - self.mean
                out[f"own_{side}"] = own.cpu()
                out[f"obs_{side}"] = obs.cpu()
            else:
                out[f"own_{side}"] = nan.cpu()
                out[f"obs_{side}"] = nan.cpu()
        w = self.weight.float() if self.weight is not None else None
        shares = self.info.geometry.padded_tap_share()
        for side in SIDES:
            if w is None or not self.side_n[side]:
                out[f"kmass_{side}"] = nan.cpu()
            else:
                out[f"kmass_{side}"] = torch.einsum("kcab,ab->k", w, shares[side].to(w)).cpu()
        if w is not None:
            out["kernel"] = w.sum(dim=1).flatten(1).float().cpu()
        return out
