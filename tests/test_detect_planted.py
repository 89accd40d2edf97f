"""Planted PANs are recovered exactly; negative controls show none; numbers are invariant."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import pipeline.detect.layer as layer_module
from pipeline.detect import detect_pans
from pipeline.detect.geometry import ConvGeometry
from pipeline.detect.layer import LayerStats

# Each planted filter: (taps carrying weight on the border ring, expected sides, expected sign).
# The input is positive, so zero padding *lowers* a filter whose border taps are positive
# (inhibited) and raises one whose border taps are negative (excited).
PLANTED = [
    ({(0, 1): 3.0}, "top", "inhibited"),
    ({(2, 1): -3.0}, "bottom", "excited"),
    ({(1, 0): 3.0}, "left", "inhibited"),
    ({(1, 2): -3.0}, "right", "excited"),
    ({(0, 1): 3.0, (1, 0): 3.0}, "top+left", "inhibited"),  # corner pair
    ({(0, 1): -3.0, (2, 1): -3.0}, "top+bottom", "excited"),  # opposite pair
    ({(0, 1): 3.0, (2, 1): 3.0, (1, 0): 3.0, (1, 2): 3.0}, "top+bottom+left+right", "inhibited"),
]
N_NEUTRAL = 9


def planted_conv(seed: int = 0) -> tuple[nn.Conv2d, list[tuple[str | None, str | None]]]:
    """A conv whose first filters are planted PANs and whose last ones are neutral.

    Neutral filters have random weights on every tap, but equal and opposite on two input
    channels with the same mean: their padded taps cancel, so padding does nothing to them.
    """
    g = torch.Generator().manual_seed(seed)
    k = len(PLANTED) + N_NEUTRAL
    conv = nn.Conv2d(2, k, 3, padding=1, bias=False)
    expected: list[tuple[str | None, str | None]] = []
    with torch.no_grad():
        conv.weight.zero_()
        for i, (taps, sides, sign) in enumerate(PLANTED):
            conv.weight[i, :, 1, 1] = 1.0
            for (a, b), v in taps.items():
                conv.weight[i, :, a, b] = v
            expected.append((sides, sign))
        for i in range(len(PLANTED), k):
            r = torch.randn(3, 3, generator=g)
            conv.weight[i, 0] = r
            conv.weight[i, 1] = -r
            conv.weight[i, 0, 1, 1] += 1.0  # keep a non-constant interior
            expected.append((None, None))
    return conv, expected


def positive_input(n: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = 1.0 + 0.1 * torch.randn(n, 1, 32, 32, generator=g)
    return x.repeat(1, 2, 1, 1) + 0.05 * torch.randn(n, 2, 32, 32, generator=g)


def planted_errors(rows: list[dict], expected: list[tuple[str | None, str | None]]) -> list[str]:
    """Every way the detector's rows differ from the planted truth (empty: precision = recall = 1,
    every side label and sign exact)."""
    errors = []
    for r in rows:
        sides, sign = expected[r["channel"]]
        if r["is_pan"] != (sides is not None):
            errors.append(f"channel {r['channel']}: is_pan {r['is_pan']}, planted {sides is not None}")
        if (r["pan_sides"], r["pan_sign"]) != (sides, sign):
            errors.append(f"channel {r['channel']}: {r['pan_sides']} {r['pan_sign']}, planted {sides} {sign}")
    return errors


def test_planted_pans_found_with_sides_and_signs():
    conv, expected = planted_conv()
    rows = detect_pans(conv, positive_input(), tau=3.0).neurons.to_pylist()
    assert planted_errors(rows, expected) == []
    assert sum(r["is_pan"] for r in rows) == len(PLANTED)


def _swap_top_bottom(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bug: the rows axis read upside down (top strip taken from the bottom rows and back)."""
    original = ConvGeometry.side_slices

    def swapped(self: ConvGeometry) -> dict:
        sl = original(self)
        return {**sl, "top": sl["bottom"], "bottom": sl["top"]}

    monkeypatch.setattr(ConvGeometry, "side_slices", swapped)


def _reversed_difference(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bug: own response taken as reference minus padded output (every sign flipped)."""
    original = LayerStats.finish

    def flipped(self: LayerStats) -> dict:
        out = original(self)
        return {k: (-v if k.startswith("own_") else v) for k, v in out.items()}

    monkeypatch.setattr(LayerStats, "finish", flipped)


def _zero_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bug: the reference padding is zeros too, so the layer's zero padding is compared with itself."""
    monkeypatch.setattr(layer_module, "_select", lambda x, rows, cols: torch.zeros(
        x.shape[0], x.shape[1], len(rows), len(cols), dtype=x.dtype))


@pytest.mark.parametrize(
    ("bug", "symptom"),
    [
        (_swap_top_bottom, "channel 0: bottom inhibited, planted top inhibited"),
        (_reversed_difference, "channel 0: top excited, planted top inhibited"),
        (_zero_reference, "channel 0: is_pan False, planted True"),
    ],
)
def test_planted_detection_can_fail(monkeypatch: pytest.MonkeyPatch, bug, symptom: str):
    """The planted check catches plausible detector bugs: with each one put in, the very check of
    test_planted_pans_found_with_sides_and_signs reports the error the bug makes."""
    conv, expected = planted_conv()
    bug(monkeypatch)
    rows = detect_pans(conv, positive_input(), tau=3.0).neurons.to_pylist()
    errors = planted_errors(rows, expected)
    assert symptom in errors, errors


def framed_input(n: int = 8) -> torch.Tensor:
    """The positive input inside a frame: edge pixels brighter than the next ones in (reflect reads
    those) on top and left, darker on bottom and right (circular reads the opposite edge)."""
    x = positive_input(n)
    x[:, :, 0, :] = x[:, :, :, 0] = 2.0
    x[:, :, -1, :] = x[:, :, :, -1] = 0.5
    return x


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_non_constant_padding_modes_are_measured_but_hold_no_pans(mode: str):
    """Negative control: the planted PANs of a zero-padded layer, with the layer's padding mode
    changed. The input has edge structure, so reflect and circular padding differ from the replicate
    reference and the planted neurons answer them strongly (stored as measured); they are still
    not PANs (pan_rule measured_only). Replicate padding is the reference: exactly no response."""
    conv, _ = planted_conv()
    conv.padding_mode = mode
    result = detect_pans(conv, framed_input(), tau=3.0)
    assert result.layers.column("padding_mode").to_pylist() == [mode]
    rows = result.neurons.to_pylist()
    assert {r["pan_rule"] for r in rows} == {"measured_only"}
    assert not any(r["is_pan"] or r["pan_sides"] or r["pan_sign"] for r in rows)
    assert result.summary["pans"] == 0 and result.layers.column("pans").to_pylist() == [0]
    own = [r["max_abs_own_z"] for r in rows[: len(PLANTED)]]
    if mode == "replicate":
        assert max(own) < 1e-5
    else:
        assert max(own) >= 3.0  # what the rule before detector 1.2 counted as PANs


def test_removing_padding_removes_the_scope():
    conv, _ = planted_conv()
    conv.padding = (0, 0)
    result = detect_pans(conv, positive_input(), tau=3.0)
    assert result.neurons.num_rows == 0
    assert result.summary["conv_neurons"] == conv.out_channels
    assert result.summary["padded_neurons"] == 0


def test_dead_neurons_are_flagged_never_pans():
    """A nearly dead planted PAN (weights x 1e-7) keeps its z-scores but is flagged, not ranked."""
    conv, _ = planted_conv()
    with torch.no_grad():
        conv.weight[0] *= 1e-7
    rows = detect_pans(conv, positive_input(), tau=3.0).neurons.to_pylist()
    assert abs(rows[0]["own_z_top"]) >= 3.0  # z is scale-free: it would pass as a PAN
    assert rows[0]["dead"] is True and rows[0]["is_pan"] is False
    assert not any(r["dead"] for r in rows[1:])


def test_batch_split_and_repeats_are_invariant():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8),
    )
    x = torch.rand(16, 3, 20, 20)
    whole = detect_pans(model, x, batch_size=16, device="cpu").neurons
    split = detect_pans(model, x, batch_size=8, device="cpu").neurons
    again = detect_pans(model, x, batch_size=16, device="cpu").neurons
    assert whole.equals(again)  # repeated runs on CPU: bit-identical (CUDA kernels need not be)
    cols = [c for c in whole.column_names if c.startswith(("own_z", "obs_z")) or c == "scale"]
    for c in cols:
        a = torch.tensor([v if v is not None else 0.0 for v in whole.column(c).to_pylist()])
        b = torch.tensor([v if v is not None else 0.0 for v in split.column(c).to_pylist()])
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4), c  # stated tolerance: 1e-4 (z units)
