"""Border geometry against a brute-force reference: pad one side with ones, convolve with ones."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from pipeline.detect.geometry import AxisGeometry, ConvGeometry, same_padding
from pipeline.schema import SIDES


def brute_force_masks(h, w, k, s, d, pads):
    """Output positions that read each side's padding: that side's band holds ones, the rest zeros."""
    t, b, left, r = pads
    masks = {}
    for side in SIDES:
        band = torch.zeros(1, 1, h + t + b, w + left + r)
        if side == "top":
            band[..., :t, :] = 1
        elif side == "bottom":
            band[..., h + t :, :] = 1
        elif side == "left":
            band[..., :, :left] = 1
        else:
            band[..., :, w + left :] = 1
        out = F.conv2d(band, torch.ones(1, 1, k, k), stride=s, dilation=d)
        masks[side] = out[0, 0] > 0
    return masks


def one_side_masks(reads: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each side's strip as the detector defines it: reads that side's padding and no other's."""
    return {s: reads[s] & ~torch.stack([reads[o] for o in SIDES if o != s]).any(0) for s in SIDES}


def geometry(h, w, k, s, d, pads):
    t, b, left, r = pads
    return ConvGeometry(AxisGeometry(h, k, s, d, t, b), AxisGeometry(w, k, s, d, left, r))


CASES = [
    (size, k, s, d, pads)
    for size, k, s, d in itertools.product((7, 8, 15, 16), (1, 3, 5, 7), (1, 2), (1, 2))
    for pads in (
        ((k - 1) * d // 2,) * 4,  # symmetric "same-ish"
        (0, 1, 0, 1),  # asymmetric: bottom/right only (TF SAME, stride 2, even input)
        (2, 0, 1, 3),  # arbitrary
    )
    if size + pads[0] + pads[1] >= (k - 1) * d + 1
]


@pytest.mark.parametrize(("size", "k", "s", "d", "pads"), CASES)
def test_masks_match_brute_force(size, k, s, d, pads):
    h, w = size, size + 1  # odd and even in the same case, non-square
    if w + pads[2] + pads[3] < (k - 1) * d + 1:
        pytest.skip("kernel larger than padded input")
    g = geometry(h, w, k, s, d, pads)
    reads = brute_force_masks(h, w, k, s, d, pads)
    expected = one_side_masks(reads)
    got = g.side_masks()
    for side in SIDES:
        assert got[side].shape == expected[side].shape
        assert torch.equal(got[side], expected[side]), side
    interior = ~(reads["top"] | reads["bottom"] | reads["left"] | reads["right"])
    ri, ci = g.interior_slice()
    check = torch.zeros_like(interior)
    check[ri, ci] = True
    assert torch.equal(check, interior)


def test_stride2_even_input_consumes_one_side_only():
    """Mind the Pad: 3x3, stride 2, padding 1, input 224: the bottom padding is never read."""
    g = geometry(224, 224, 3, 2, 1, (1, 1, 1, 1))
    assert g.strips() == {"top": 1, "bottom": 0, "left": 1, "right": 0}


def test_tf_same_padding_pads_bottom_right_at_even_size():
    assert same_padding(224, 3, 2, 1) == (0, 1)
    assert same_padding(225, 3, 2, 1) == (1, 1)
    assert same_padding(112, 5, 1, 1) == (2, 2)


def test_padded_tap_share_matches_brute_force():
    """Share of border positions at which each tap reads padding, counted position by position."""
    h, w, k, s, d, pads = 9, 10, 3, 2, 1, (1, 1, 1, 1)
    g = geometry(h, w, k, s, d, pads)
    masks = g.side_masks()
    shares = g.padded_tap_share()
    for side in SIDES:
        positions = masks[side].nonzero().tolist()
        if not positions:
            continue
        expected = torch.zeros(k, k)
        for i, j in positions:
            for a in range(k):
                for b in range(k):
                    row, col = i * s - pads[0] + a * d, j * s - pads[2] + b * d
                    expected[a, b] += not (0 <= row < h and 0 <= col < w)
        assert torch.allclose(shares[side], expected / len(positions)), side
