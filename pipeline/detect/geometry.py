"""Where the border is: exactly which output positions of a convolution read padding.

All per dimension: the rows (or columns) of the output that read low-side padding form a prefix
``[0, low)``, those that read high-side padding a suffix ``[high, out)``, and the interior is what
lies between. Never symmetric by assumption: with stride 2 an even input often consumes the
padding on one side only, and dynamic SAME padding is asymmetric by design.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class AxisGeometry:
    """One spatial axis of a convolution: input size (unpadded), kernel, stride, dilation, pads."""

    size: int
    kernel: int
    stride: int
    dilation: int
    pad_low: int
    pad_high: int

    @property
    def out(self) -> int:
        span = self.dilation * (self.kernel - 1) + 1
        return max(0, (self.size + self.pad_low + self.pad_high - span) // self.stride + 1)

    def first_tap(self, i: int) -> int:
        """Input index (unpadded coordinates) read by the first tap of output position ``i``."""
        return i * self.stride - self.pad_low

    @property
    def low(self) -> int:
        """Number of output positions whose first tap falls in the low-side padding."""
        # first_tap(i) < 0  <=>  i < pad_low / stride
        return min(self.out, -(-self.pad_low // self.stride)) if self.pad_low > 0 else 0

    @property
    def high(self) -> int:
        """Index of the first output position whose last tap falls in the high-side padding."""
        reach = self.dilation * (self.kernel - 1)
        # last tap = i*stride - pad_low + reach > size - 1  <=>  i > (size - 1 + pad_low - reach) / stride
        limit = self.size - 1 + self.pad_low - reach
        first_bad = limit // self.stride + 1 if limit >= 0 else 0
        return max(0, min(self.out, first_bad))

    @property
    def strip_low(self) -> int:
        return self.low

    @property
    def strip_high(self) -> int:
        return self.out - self.high

    @property
    def has_interior(self) -> bool:
        return self.high > self.low

    def tap_padded(self) -> torch.Tensor:
        """Boolean (out, kernel): does tap ``a`` of output position ``i`` read padding?"""
        i = torch.arange(self.out).unsqueeze(1)
        a = torch.arange(self.kernel).unsqueeze(0)
        pos = i * self.stride - self.pad_low + a * self.dilation
        return (pos < 0) | (pos >= self.size)


@dataclass(frozen=True)
class ConvGeometry:
    """Both axes of a convolution, plus per-side views used by the statistics."""

    rows: AxisGeometry
    cols: AxisGeometry

    @property
    def out_shape(self) -> tuple[int, int]:
        return self.rows.out, self.cols.out

    @property
    def has_interior(self) -> bool:
        return self.rows.has_interior and self.cols.has_interior

    def strips(self) -> dict[str, int]:
        """How many output rows/cols read each side's padding (0: that side is never read)."""
        return {
            "top": self.rows.strip_low,
            "bottom": self.rows.strip_high,
            "left": self.cols.strip_low,
            "right": self.cols.strip_high,
        }

    def side_slices(self) -> dict[str, tuple[slice, slice]]:
        """Output regions of each side's strip: positions that read that side's padding and no
        other side's. Corners, which read two sides at once, belong to neither, so every number
        measured on a side's strip comes from that side's padding alone (docs/method.md)."""
        rows_in, cols_in = slice(self.rows.low, self.rows.high), slice(self.cols.low, self.cols.high)
        return {
            "top": (slice(0, self.rows.low), cols_in),
            "bottom": (slice(self.rows.high, self.rows.out), cols_in),
            "left": (rows_in, slice(0, self.cols.low)),
            "right": (rows_in, slice(self.cols.high, self.cols.out)),
        }

    def interior_slice(self) -> tuple[slice, slice]:
        return slice(self.rows.low, self.rows.high), slice(self.cols.low, self.cols.high)

    def side_masks(self) -> dict[str, torch.Tensor]:
        """Boolean (out_h, out_w) mask per side: that side's strip (see :meth:`side_slices`)."""
        masks = {}
        for side, (rs, cs) in self.side_slices().items():
            mask = torch.zeros(self.out_shape, dtype=torch.bool)
            mask[rs, cs] = True
            masks[side] = mask
        return masks

    def padded_tap_share(self) -> dict[str, torch.Tensor]:
        """Per side, a (kh, kw) matrix: the share of that side's strip positions at which each
        kernel tap reads padding (only that side's: strips hold no corners). Weights times this
        give the kernel view."""
        rp = self.rows.tap_padded().float()  # (out_h, kh)
        cp = self.cols.tap_padded().float()  # (out_w, kw)
        shares = {}
        for side, (rs, cs) in self.side_slices().items():
            r_in = 1.0 - rp[rs].mean(0) if rp[rs].numel() else None
            c_in = 1.0 - cp[cs].mean(0) if cp[cs].numel() else None
            if r_in is None or c_in is None:
                shares[side] = torch.zeros(self.rows.kernel, self.cols.kernel)
            else:
                # a tap reads real input only if both its row and its column are inside
                shares[side] = 1.0 - torch.outer(r_in, c_in)
        return shares


def same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TF "SAME" padding for one axis, as timm's ``pad_same`` computes it: (low, high)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def torch_same_padding(kernel: int, dilation: int) -> tuple[int, int]:
    """PyTorch's ``padding='same'`` (stride 1 only): the extra pixel goes to the high side."""
    total = dilation * (kernel - 1)
    return total // 2, total - total // 2
