"""A per-neuron permutation null for PANs: same kernel weights, spatial taps shuffled.

docs/calibration.md ("What this calibration does not show") notes that a freshly initialised
network passes tau = 3 about as often as a trained one: a large own padding response can come
from *any* weights when the input has a large mean and a small spread. This script tests the
suggested fix: call a PAN *specific* when its border response is extreme for its own weights,
i.e. larger than the same kernel gives with its spatial taps permuted.

Per padded convolution and neuron k, side s (the detector's definitions, docs/method.md):

    own_z[k, s] = mean over side-s border positions of conv(D, W_k) / scale_k

with D = (zero-padded batch-mean input) - (replicate-padded batch-mean input), zero except on the
padding (linearity: the batch mean of the responses is the response to the batch-mean input),
and scale_k the std of the conv's output over interior positions and the batch. Because the
response is linear in the weight, own[k, s] = sum_{c,t} W[k, c, t] * M_s[c, t], where M_s is the
mean over side-s output positions of the unfolded D window (one (C, kh*kw) matrix per side).
So a permuted kernel costs one gather and one dot product: no extra convolution.

Null: the kh*kw spatial taps of neuron k are permuted (P random permutations per neuron), the
*same* permutation for all of its input channels. That keeps each tap's vector of cross-channel
weights (a stem filter's colour mixing at each position) and randomises only where in the
window it sits, which is exactly the property in question; an independent permutation per input
channel would also destroy the channel mixing and so test two things at once. For depthwise
convolutions and the toy's grouped conv1 (one input channel per neuron) the two choices coincide.
p_k = (1 + #{perm: max_s |own_perm| >= max_s |own_obs|}) / (1 + P). scale_k is kept fixed: an
APPROXIMATION, since a permuted kernel would also have a different interior spread.

Scope: nn.Conv2d with integer padding and padding_mode 'zeros' (groups any) -- the brief's scope,
column "int" -- and, as an extension, timm's Conv2dSame (dynamic TF-SAME zero padding, asymmetric),
column "+same", so that the EfficientNet-Lite0 totals can be set against the detector's 159 / 170 /
179. Dead neurons (pipeline.detect.classify.dead_mask) are never PANs, as in the detector.

    python bench/permutation_null.py            # ~1-2 min on 2 cores
    python bench/permutation_null.py --perms 1000 --alpha 0.01
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Conv2dSame

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.detect import detect_pans  # noqa: E402
from pipeline.detect.classify import dead_mask  # noqa: E402
from pipeline.detect.geometry import AxisGeometry, ConvGeometry, same_padding  # noqa: E402
from pipeline.probes import make_probe  # noqa: E402
from pipeline.schema import SIDES  # noqa: E402
from pipeline.sources import load_model  # noqa: E402
from tests.toy_models import BorderCNN, border_task, train_border_cnn  # noqa: E402

SHARED = ROOT.parent / "shared" / "models"
TAU = 3.0


@dataclass
class LayerResult:
    name: str
    kind: str  # "int" (nn.Conv2d, int zero padding) or "same" (timm Conv2dSame)
    own: torch.Tensor  # (K, 4) own response per side (NaN: empty strip), unscaled
    scale: torch.Tensor  # (K,)
    null_max: torch.Tensor  # (P, K) max_s |own_perm| / scale


def _kind(m: nn.Module) -> str | None:
    """Which of our scopes a module falls in (None: out of scope)."""
    if isinstance(m, Conv2dSame):
        return "same"
    if type(m).forward is not nn.Conv2d.forward or m.padding_mode != "zeros" or isinstance(m.padding, str):
        return None
    return "int" if any(m.padding) else None


def _pads(m: nn.Module, kind: str, h: int, w: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) zero padding the conv applies to an (h, w) input."""
    kh, kw = m.weight.shape[2:]
    if kind == "same":
        t, b = same_padding(h, kh, m.stride[0], m.dilation[0])
        left, r = same_padding(w, kw, m.stride[1], m.dilation[1])
        return t, b, left, r
    return m.padding[0], m.padding[0], m.padding[1], m.padding[1]


class NullHook:
    """Forward hook: per-neuron interior scale, own response per side, and its permutation null."""

    def __init__(self, name: str, kind: str, perms: int, gen: torch.Generator) -> None:
        self.name, self.kind, self.perms, self.gen = name, kind, perms, gen
        self.result: LayerResult | None = None

    @torch.no_grad()
    def __call__(self, m: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        if self.result is not None:
            raise RuntimeError(f"{self.name} called twice; run the whole probe as one batch")
        x = inp[0]
        h, w = x.shape[2:]
        weight = m.weight.detach().double()
        k_out, cg, kh, kw = weight.shape
        t, b, left, r = _pads(m, self.kind, h, w)
        g = ConvGeometry(
            AxisGeometry(h, kh, m.stride[0], m.dilation[0], t, b),
            AxisGeometry(w, kw, m.stride[1], m.dilation[1], left, r),
        )
        if tuple(out.shape[2:]) != g.out_shape:
            raise RuntimeError(f"{self.name}: geometry {g.out_shape} != output {tuple(out.shape[2:])}")
        if not g.has_interior:
            return
        ri, ci = g.interior_slice()
        if (ri.stop - ri.start) * (ci.stop - ci.start) < 4:  # the detector's MIN_INTERIOR_POSITIONS
            return
        scale = out[:, :, ri, ci].double().var(dim=(0, 2, 3), correction=0).sqrt()
        # D on the batch-mean input: zero padding minus replicate padding, zero off the padding.
        xbar = x.double().mean(dim=0, keepdim=True)
        d = F.pad(xbar, (left, r, t, b)) - F.pad(xbar, (left, r, t, b), mode="replicate")
        cols = F.unfold(d, (kh, kw), dilation=m.dilation, stride=m.stride)  # (1, C*T, L)
        cols = cols.view(d.shape[1], kh * kw, *g.out_shape)
        groups = m.groups
        wg = weight.view(groups, k_out // groups, cg, kh * kw)
        own = torch.full((k_out, 4), float("nan"), dtype=torch.float64)
        windows = []  # per non-empty side: (G, Cg, T) mean window
        sides = []
        for i, (rs, cs) in enumerate(g.side_slices().values()):
            region = cols[:, :, rs, cs]
            if not region.numel():
                continue
            mw = region.mean(dim=(2, 3)).view(groups, cg, kh * kw)
            windows.append(mw)
            sides.append(i)
            own[:, i] = torch.einsum("gkct,gct->gk", wg, mw).reshape(k_out)
        mwin = torch.stack(windows)  # (S, G, Cg, T)
        # P permutations per neuron, shared by the neuron's input channels.
        perm = torch.rand(self.perms, k_out, kh * kw, generator=self.gen, dtype=torch.float64).argsort(dim=2)
        wflat = weight.view(k_out, cg, kh * kw)
        wp = torch.gather(wflat.unsqueeze(0).expand(self.perms, -1, -1, -1), 3,
                          perm.unsqueeze(2).expand(-1, -1, cg, -1))  # (P, K, Cg, T)
        wp = wp.view(self.perms, groups, k_out // groups, cg, kh * kw)
        null = torch.einsum("pgkct,sgct->psgk", wp, mwin).reshape(self.perms, len(sides), k_out)
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))
        null_max = null.abs().amax(dim=1) / safe
        self.result = LayerResult(self.name, self.kind, own, scale, null_max)


def measure(model: nn.Module, images: torch.Tensor, perms: int, seed: int) -> list[LayerResult]:
    """One forward pass over the whole probe with a NullHook on every in-scope convolution."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    hooks, handles = [], []
    for name, m in model.named_modules():
        kind = _kind(m) if isinstance(m, nn.Conv2d) else None
        if kind is not None:
            hook = NullHook(name, kind, perms, gen)
            hooks.append(hook)
            handles.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(images)
    finally:
        for hd in handles:
            hd.remove()
    return [hk.result for hk in hooks if hk.result is not None]


def summarise(results: list[LayerResult], alpha: float, kinds: set[str]) -> dict:
    pans = specific = live = live_low = 0
    pvals = []
    for lr in results:
        if lr.kind not in kinds:
            continue
        dead = torch.from_numpy(dead_mask(lr.scale.numpy()))
        safe = torch.where(lr.scale > 0, lr.scale, torch.ones_like(lr.scale))
        obs = (lr.own.abs() / safe.unsqueeze(1)).nan_to_num(-1.0).amax(dim=1)
        p = (1 + (lr.null_max >= obs.unsqueeze(0)).sum(dim=0)) / (1 + lr.null_max.shape[0])
        is_pan = (obs >= TAU) & ~dead
        live += int((~dead).sum())
        live_low += int(((p <= alpha) & ~dead).sum())
        pans += int(is_pan.sum())
        specific += int((is_pan & (p <= alpha)).sum())
        pvals += p[is_pan].tolist()
    return {"live": live, "pans": pans, "specific": specific, "pvals": pvals, "live_low": live_low}


def agreement(model: nn.Module, images: torch.Tensor, results: list[LayerResult]) -> tuple[float, float, int, int, int]:
    """Compare our unpermuted own_z with detect_pans's on the same layers and channels.

    Returns (max |diff| in z, max relative diff where |own_z| >= 0.1, neurons compared, PANs by
    detect_pans, neurons whose PAN flag differs).
    """
    t = detect_pans(model, images, tau=TAU, device="cpu").neurons.to_pydict()
    by_layer: dict[str, list[int]] = {}
    for i, layer in enumerate(t["layer"]):
        by_layer.setdefault(layer, []).append(i)
    max_abs = max_rel = 0.0
    n = pans_det = disagree = 0
    for lr in results:
        rows = by_layer[lr.name]
        safe = torch.where(lr.scale > 0, lr.scale, torch.ones_like(lr.scale))
        ours = (lr.own / safe.unsqueeze(1)).numpy()
        theirs = np.array([[np.nan if t[f"own_z_{s}"][i] is None else t[f"own_z_{s}"][i] for s in SIDES]
                           for i in rows])
        if not np.array_equal(np.isnan(ours), np.isnan(theirs)):
            raise RuntimeError(f"{lr.name}: different empty sides than detect_pans")
        ok = ~np.isnan(ours)
        diff = np.abs(ours[ok] - theirs[ok])
        max_abs = max(max_abs, float(diff.max(initial=0.0)))
        big = np.abs(theirs[ok]) >= 0.1
        max_rel = max(max_rel, float((diff[big] / np.abs(theirs[ok][big])).max(initial=0.0)))
        n += len(rows)
        dead = dead_mask(lr.scale.numpy())
        ours_pan = (np.nan_to_num(np.abs(ours), nan=-1).max(axis=1) >= TAU) & ~dead
        det_pan = np.array([t["is_pan"][i] for i in rows])
        pans_det += int(det_pan.sum())
        disagree += int((ours_pan != det_pan).sum())
    return max_abs, max_rel, n, pans_det, disagree


def models(quick_toy_seeds: tuple[int, ...]):
    """(label, model, probe) in the order of the table."""
    lite = load_model(f"local-dir:{SHARED / 'tf_efficientnet_lite0.in1k'}")
    photos = make_probe("photos", 16, lite.preprocess)
    yield "tf_efficientnet_lite0 trained", lite.model, photos
    for seed in (0, 1):
        torch.manual_seed(seed)
        yield f"tf_efficientnet_lite0 init seed {seed}", timm.create_model("tf_efficientnet_lite0"), photos
    probe, _ = border_task(64, seed=7)
    for seed in quick_toy_seeds:
        yield f"toy border CNN trained seed {seed}", train_border_cnn(seed=seed), probe
        torch.manual_seed(seed)
        yield f"toy border CNN init seed {seed}", BorderCNN().eval(), probe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--perms", type=int, default=200, help="permutations per neuron (default 200)")
    ap.add_argument("--alpha", type=float, default=0.05, help="p-value cut for a specific PAN (default 0.05)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the permutations")
    ap.add_argument("--toy-seeds", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"{SHARED} absent: no trained weights")
    started = time.perf_counter()
    print(f"tau {TAU}, {args.perms} tap permutations per neuron (same permutation for all input channels of a"
          f" neuron), specific = PAN with p <= {args.alpha}; p = (1 + #perm >= obs) / (1 + P).")
    print("APPROXIMATION: scale_k (interior std) is kept at the observed kernel's value for every permutation.")
    print("int = nn.Conv2d with int zero padding (brief's scope); +same = also timm Conv2dSame (dynamic TF-SAME).")
    head = (f"{'model':34s} {'scope':>5s} {'live':>6s} {'PANs':>5s} {'specific':>8s} {'share':>6s}"
            f" {'med p':>6s} {'live p<=a':>9s}")
    rows, checks = [], []
    for label, model, images in models(tuple(args.toy_seeds)):
        t0 = time.perf_counter()
        res = measure(model, images, args.perms, args.seed)
        for scope, kinds in (("int", {"int"}), ("+same", {"int", "same"})):
            if scope == "+same" and not any(lr.kind == "same" for lr in res):
                continue
            s = summarise(res, args.alpha, kinds)
            share = s["specific"] / s["pans"] if s["pans"] else float("nan")
            med = float(np.median(s["pvals"])) if s["pvals"] else float("nan")
            rows.append(f"{label:34s} {scope:>5s} {s['live']:6d} {s['pans']:5d} {s['specific']:8d} {share:6.1%}"
                        f" {med:6.3f} {s['live_low'] / s['live']:9.1%}")
        secs = time.perf_counter() - t0
        max_abs, max_rel, n, pans_det, disagree = agreement(model, images, res)
        checks.append(f"{label:34s} {n:6d} {max_abs:10.2e} {max_rel:10.2e} {pans_det:9d} {disagree:9d} {secs:7.1f}")
    print()
    print(head)
    print("\n".join(rows))
    print("med p: median p of the PANs. live p<=a: share of ALL live neurons with p <= alpha, PAN or not (about")
    print("alpha when placement is random, as in a fresh init with i.i.d. weights). The share among PANs is not")
    print("expected to be alpha even then: passing tau favours placements that are extreme for their own weights.")
    print()
    print("agreement of unpermuted own_z with detect_pans (same layers, all live+dead neurons, all sides):")
    print(f"{'model':34s} {'neurons':>6s} {'max|dz|':>10s} {'max rel':>10s} {'PANs det':>9s} {'PAN diff':>9s}"
          f" {'null s':>7s}")
    print("(max rel: over |own_z| >= 0.1; null s: seconds of the hooked pass with the permutations)")
    print("\n".join(checks))
    print(f"\ntotal {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
