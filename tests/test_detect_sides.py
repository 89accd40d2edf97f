"""One side per side: a neuron whose only padded tap is on one edge is labelled with that side only.

Planted single-tap neurons (the middle tap of one kernel edge) on positive input: zero padding
changes them on their own side's border and nowhere else. Checked at output maps from 4x4 up,
odd and even, stride 1 and 2, for the ways a network pads (``padding=1``, TF SAME via timm's
``Conv2dSame``, an explicit ``nn.ZeroPad2d``). The last test runs the same check with the old
strip rule (corners included) and shows that it catches the leakage that rule had.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from timm.layers import Conv2dSame

from pipeline.detect import detect_pans
from pipeline.detect.geometry import ConvGeometry
from pipeline.schema import SIDES

# The only tap of each planted neuron (3x3 kernel) and the side whose padding it reads.
TAPS = {"top": (0, 1), "bottom": (2, 1), "left": (1, 0), "right": (1, 2)}
STYLES = ("padding1", "tf_same", "explicit_pad")


def single_tap_model(style: str, stride: int) -> nn.Module:
    if style == "padding1":
        conv = nn.Conv2d(1, 4, 3, stride=stride, padding=1, bias=False)
        model: nn.Module = conv
    elif style == "tf_same":
        conv = Conv2dSame(1, 4, 3, stride=stride, bias=False)
        model = conv
    else:
        conv = nn.Conv2d(1, 4, 3, stride=stride, padding=0, bias=False)
        model = nn.Sequential(nn.ZeroPad2d(1), conv)
    with torch.no_grad():
        conv.weight.zero_()
        for channel, side in enumerate(SIDES):
            a, b = TAPS[side]
            conv.weight[channel, 0, a, b] = 1.0
    return model.eval()


def positive_input(size: int, n: int = 4) -> torch.Tensor:
    """Around 1 with faint noise: zero padding is a large drop against the interior spread."""
    g = torch.Generator().manual_seed(size)
    return 1.0 + 0.02 * torch.randn(n, 1, size, size, generator=g)


def side_label_errors(model: nn.Module, size: int) -> list[str]:
    """Every way the detector's labels differ from the planted truth (empty: all exact)."""
    result = detect_pans(model, positive_input(size), tau=3.0, batch_size=2, device="cpu")
    layer = result.layers.to_pylist()[0]
    if layer["skipped"] is not None:
        return [f"layer skipped: {layer['skipped']}"]
    errors = []
    for row in result.neurons.to_pylist():
        side = SIDES[row["channel"]]
        read = layer[f"strip_{side}"] > 0  # does this tap's side get read at all (stride 2, TF SAME)?
        want = side if read else None
        if row["pan_sides"] != want:
            errors.append(f"{side} tap: pan_sides {row['pan_sides']!r}, expected {want!r}")
        for other in SIDES:
            own = row[f"own_z_{other}"]
            if other != side and own is not None and abs(own) > 1e-5:
                errors.append(f"{side} tap: own_z_{other} = {own:.3g}, expected 0")
            kmass = row[f"kmass_{other}"]
            if other != side and kmass is not None and abs(kmass) > 1e-6:
                errors.append(f"{side} tap: kmass_{other} = {kmass:.3g}, expected 0")
        if read and row["pan_sign"] != "inhibited":
            errors.append(f"{side} tap: sign {row['pan_sign']!r}, expected 'inhibited'")
    return errors


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("out_size", [4, 5, 7, 14, 32])
def test_single_tap_neurons_get_exactly_their_side(out_size: int, stride: int, style: str):
    # stride 2: an even input (2m) and an odd one (2m - 1) both give an m x m output map
    for size in {out_size * stride, out_size * stride - (stride - 1)}:
        model = single_tap_model(style, stride)
        assert side_label_errors(model, size) == [], (size, style, stride)


def test_old_corner_rule_fails_the_side_check(monkeypatch: pytest.MonkeyPatch):
    """With strips that include corners (the rule before detector 1.2), the check above fails:
    the left tap leaks into top and bottom at the corners (the issue's 7x7 measurement)."""

    def with_corners(self: ConvGeometry) -> dict[str, tuple[slice, slice]]:
        full_r, full_c = slice(0, self.rows.out), slice(0, self.cols.out)
        return {
            "top": (slice(0, self.rows.low), full_c),
            "bottom": (slice(self.rows.high, self.rows.out), full_c),
            "left": (full_r, slice(0, self.cols.low)),
            "right": (full_r, slice(self.cols.high, self.cols.out)),
        }

    assert side_label_errors(single_tap_model("padding1", 1), 7) == []
    monkeypatch.setattr(ConvGeometry, "side_slices", with_corners)
    errors = side_label_errors(single_tap_model("padding1", 1), 7)
    assert "left tap: pan_sides 'top+bottom+left', expected 'left'" in errors
    assert any(e.startswith("left tap: own_z_top") for e in errors)
