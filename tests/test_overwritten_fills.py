"""Model builds skip the draws a model's own init or its checkpoint overwrites, and nothing else
(pipeline/sources/overwritten_fills.py)."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import timm
import torch
import torch.nn as nn

from pipeline.sources import INIT_SEED, load_model
from pipeline.sources.overwritten_fills import overwritten_fills_skipped


def seeded(steps, *, skip: bool) -> tuple[torch.Tensor, ...]:
    """Run ``steps`` under seed 0, with or without the mode; returns what ``steps`` returns."""
    torch.manual_seed(0)
    if not skip:
        return steps()
    with overwritten_fills_skipped():
        out = steps()
    return out


def test_an_overwritten_fill_is_not_drawn_and_the_next_draws_take_its_place() -> None:
    def default_then_own():
        w = torch.empty(64, 64)
        nn.init.kaiming_uniform_(w)  # the default init: overwritten below before any read
        w.normal_(0, 0.02)
        return (w,)

    def own_only():
        w = torch.empty(64, 64)
        w.normal_(0, 0.02)
        return (w,)

    torch.manual_seed(0)
    with overwritten_fills_skipped() as mode:
        (w,) = default_then_own()
    assert mode.skipped == 1
    assert torch.equal(w, seeded(own_only, skip=False)[0])  # the first draw of the stream, as if alone
    assert not torch.equal(w, seeded(default_then_own, skip=False)[0])


@pytest.mark.parametrize(
    "read",
    [
        lambda w: w.sum(),  # a read
        lambda w: w[0].add_(1.0),  # an in-place update through a view
        lambda w: w[:2].zero_(),  # a fill of part of it: not an overwrite of the whole
        lambda w: w.data.clone(),  # through the .data alias
        lambda w: torch.cat([w, w]),  # inside a list argument
    ],
    ids=["sum", "view-update", "partial-fill", "data-alias", "cat"],
)
def test_a_fill_read_before_it_is_overwritten_is_drawn_where_it_was(read) -> None:
    def steps():
        w = torch.empty(8, 8)
        w.uniform_(-1, 1)
        seen = read(w)
        w.normal_()  # overwrites, but after the read: both draws happen, in their order
        return w, seen

    eager, skipping = seeded(steps, skip=False), seeded(steps, skip=True)
    assert all(torch.equal(a, b) for a, b in zip(eager, skipping, strict=True))


def test_a_view_made_before_the_fill_and_filled_after_it_does_not_replace_it() -> None:
    def steps():
        w = torch.empty(8, 8)
        top = w[:2]  # a view of part of the storage, made while nothing is pending
        w.uniform_(-1, 1)
        top.zero_()  # fills two rows only: the other six keep the uniform draw
        return (w,)

    eager, skipping = seeded(steps, skip=False), seeded(steps, skip=True)
    assert torch.equal(eager[0], skipping[0])


def test_a_fill_made_without_grad_on_a_parameter_is_drawn_at_the_end() -> None:
    torch.manual_seed(0)
    with overwritten_fills_skipped() as mode:
        p = nn.Parameter(torch.empty(5))
        with torch.no_grad():
            p.uniform_()  # in place on a leaf that requires grad: allowed only without grad
    # it ran after the block, outside no_grad: it must have kept its grad mode to run at all
    assert mode.skipped == 0 and p.requires_grad and p.abs().sum() > 0


def test_a_module_weight_refilled_through_data_skips_the_default() -> None:
    """timm's EfficientNet init writes ``m.weight.data.normal_``: the alias shares the storage."""
    torch.manual_seed(0)
    with overwritten_fills_skipped() as mode:
        conv = nn.Conv2d(16, 16, 3)  # default init: kaiming_uniform_ of the weight, uniform_ of the bias
        conv.weight.data.normal_(0, 0.1)
    assert mode.skipped == 1  # the weight's default draw; the bias keeps its own
    assert 0.08 < float(conv.weight.detach().std()) < 0.12


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_b0", "convnext_atto", "vit_tiny_patch16_224"])
def test_a_timm_net_gets_its_own_init_distribution_in_fewer_draws(name: str) -> None:
    def build():
        return tuple(timm.create_model(name).state_dict().values())

    eager, skipping, again = seeded(build, skip=False), seeded(build, skip=True), seeded(build, skip=True)
    torch.manual_seed(0)
    with overwritten_fills_skipped() as mode:
        timm.create_model(name)
    assert mode.skipped > 0
    assert all(torch.equal(a, b) for a, b in zip(skipping, again, strict=True))  # reproducible
    for a, b in zip(eager, skipping, strict=True):
        assert a.shape == b.shape
        if a.is_floating_point() and a.numel() >= 1024:  # enough values to compare their spread
            assert float(b.std()) == pytest.approx(float(a.std()), rel=0.1, abs=1e-6)
            assert float(b.mean()) == pytest.approx(float(a.mean()), abs=0.1 * float(a.std()) + 1e-6)


def test_a_checkpoint_load_skips_the_init_it_overwrites_and_keeps_every_value(tiny_timm_export, monkeypatch) -> None:
    from safetensors.torch import load_file

    import pipeline.sources.overwritten_fills as fills

    modes = []

    @contextmanager
    def recorded(**kwargs):
        with overwritten_fills_skipped(**kwargs) as mode:
            modes.append(mode)
            yield mode

    monkeypatch.setattr(fills, "overwritten_fills_skipped", recorded)
    folder = tiny_timm_export("test_resnet", seed=3)
    stored = load_file(str(folder / "model.safetensors"))
    loaded = load_model(f"local-dir:{folder}").model.state_dict()
    (mode,) = modes
    assert mode.copied_over > 0  # init draws that load_state_dict's copy_ overwrote were not made
    assert set(stored) <= set(loaded)
    assert all(torch.equal(loaded[k], stored[k]) for k in stored)


def test_a_py_factory_is_built_exactly_as_its_code_runs(tmp_path, monkeypatch) -> None:
    """A factory's weights may be drawn by its own code: a trained ``py:`` model is not rebuilt with
    draws skipped (which would move the random stream under its code: here the buffer's draw)."""
    factory = tmp_path / "drawn_factory.py"
    factory.write_text(
        "import torch, torch.nn as nn\n"
        "def drawn():\n"
        "    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 4, 3, padding=1))\n"
        "    model.register_buffer('noise', torch.randn(16))  # a draw between construction and first use\n"
        "    nn.init.normal_(model[0].weight)\n"
        "    return model\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from drawn_factory import drawn

    torch.manual_seed(INIT_SEED)
    direct = drawn().state_dict()
    loaded = load_model(f"py:{factory}:drawn").model.state_dict()
    assert all(torch.equal(direct[k], loaded[k]) for k in direct)


def test_a_build_that_fails_does_not_draw_what_it_left_recorded() -> None:
    drawn = torch.empty(4096)
    with pytest.raises(MemoryError), overwritten_fills_skipped() as mode:
        drawn.normal_()  # recorded, never read
        raise MemoryError("the build ran out of memory")
    assert mode.pending and not mode.skipped  # dropped with the failed build, not run after it
