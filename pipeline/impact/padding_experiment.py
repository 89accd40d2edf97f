"""The ``padding`` experiment: the same weights with the zero padding swapped for another mode.

One ``padding/<mode>`` row set per mode of ``--padding-modes`` (how predictions move, how many
convolutions were switched, how many fell back to replicate), and its class shifts in
``impact_classes``. The swap itself is :mod:`pipeline.impact.padding_swap`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.impact.errors import ImpactError
from pipeline.impact.registry import Option, register_experiment
from pipeline.options import comma_list

#: Padding modes the counterfactual can swap zero padding for.
MODES = ("reflect", "replicate", "circular")


def _check(values: Mapping[str, Any]) -> None:
    bad = [m for m in values["padding_modes"] if m not in MODES]
    if bad:
        raise ImpactError(f"unknown padding mode(s) {bad} (use {', '.join(MODES)})")


@register_experiment(
    "padding",
    options=(Option("padding_modes", MODES, "comma list of counterfactual paddings (default {default}; '' for none)",
                    comma_list),),
    check=_check,
    tables={"impact_classes": None},
)
def run(ctx: Any) -> None:
    from pipeline.impact import metrics
    from pipeline.impact.padding_swap import padding_logits

    for mode in ctx.settings.padding_modes:
        logits, counts = padding_logits(ctx.model, ctx.images.images, mode, batch_size=ctx.settings.batch_size,
                                        device=ctx.device)
        ctx.record("padding", mode, None, {
            **metrics.compare(ctx.intact, logits, ctx.labels),
            "convs_switched": float(counts.conv_padding + counts.explicit_pad),
            "fallbacks": float(counts.fallbacks),
        })
        ctx.record_class_shifts("padding", mode, None, logits)
