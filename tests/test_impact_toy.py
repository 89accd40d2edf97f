"""The PAN ablation experiment on a model trained where border position is the whole task.

PANs are chosen by the real detector (``detect_pans``). The claim "ablating PANs hurts clearly
more than ablating as many random neurons of the same layers" must hold here, and must *fail*
when random neurons are labelled PANs instead: otherwise the comparison could not tell anything.
"""

from __future__ import annotations

import random

import pyarrow as pa
import pytest

from pipeline.detect import detect_pans
from pipeline.impact.controls import pan_units, relabelled
from pipeline.impact.experiments import run_impact
from pipeline.impact.images import ImageSet
from pipeline.impact.settings import ImpactSettings
from pipeline.sources.base import LoadedModel, ModelRef, Preprocess
from tests.toy_models import border_task, train_border_cnn

CONTROLS = 10


@pytest.fixture(scope="module")
def toy() -> dict:
    model = train_border_cnn()
    probe, _ = border_task(64, seed=7)
    images, labels = border_task(256, seed=99)
    ref = ModelRef(model_id="toy:border", source="py", name="toy")
    loaded = LoadedModel(ref=ref, model=model, preprocess=Preprocess(input_size=(3, 24, 24)), architecture="BorderCNN")
    neurons = detect_pans(model, probe, device="cpu", model_id="toy:border", config_id="toy").neurons
    image_set = ImageSet(images, [str(int(v)) for v in labels], "toy")
    return {"loaded": loaded, "probe": probe, "images": image_set, "neurons": neurons}


def _accuracies(toy: dict, neurons: pa.Table) -> tuple[float, float, list[float]]:
    settings = ImpactSettings(controls=CONTROLS, padding_modes=(), border_patches=0, device="cpu", batch_size=256)
    tables = run_impact(toy["loaded"], neurons, settings, probe=toy["probe"], images=toy["images"])
    rows = [r for r in tables["impact"].to_pylist() if r["metric"] == "accuracy"]
    intact = next(r["value"] for r in rows if r["condition"] == "intact")
    pan = next(r["value"] for r in rows if r["condition"] == "pan_ablation")
    controls = [r["value"] for r in rows if r["condition"] == "random_control"]
    assert len(controls) == CONTROLS
    return intact, pan, controls


def _clearly_bigger(pan: float, controls: list[float]) -> bool:
    """The PAN accuracy is at least 0.2 below the control mean and below every control."""
    mean = sum(controls) / len(controls)
    return mean - pan >= 0.2 and pan < min(controls)


def test_the_detector_finds_pans_in_the_toy(toy: dict) -> None:
    pans = pan_units(toy["neurons"])
    assert pans.get("conv1"), "the border-reading first-layer filters should be PANs"
    assert sum(map(len, pans.values())) < toy["neurons"].num_rows / 3


def test_ablating_pans_hurts_clearly_more_than_matched_controls(toy: dict) -> None:
    intact, pan, controls = _accuracies(toy, toy["neurons"])
    assert intact > 0.95
    assert pan < 0.7  # near chance (0.5): the border is gone
    assert _clearly_bigger(pan, controls), (pan, controls)


def test_random_neurons_labelled_pans_are_not_clearly_worse_than_controls(toy: dict) -> None:
    neurons = toy["neurons"]
    pans = pan_units(neurons)
    sizes = {layer: sum(1 for x in neurons.column("layer").to_pylist() if x == layer) for layer in pans}
    rng = random.Random(0)
    fake = {layer: sorted(rng.sample(range(sizes[layer]), len(chs))) for layer, chs in pans.items()}
    assert fake != pans
    _, pan, controls = _accuracies(toy, relabelled(neurons, fake))
    assert not _clearly_bigger(pan, controls), (pan, controls)
