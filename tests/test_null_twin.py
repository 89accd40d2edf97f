"""The null twin (pipeline/null_twin.py): built as --random-init builds it, recalibrated on the probe,
running in the trained model's regime, stored beside the model, and reused per architecture."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import torch.nn as nn

from pipeline.cli import main
from pipeline.detect import detect_pans
from pipeline.detect.layout import prefers_channels_last, to_fastest_layout
from pipeline.errors import ModelLoadError, PanSurveyError
from pipeline.null_twin import DrawnBeside, MeasuredBeside, activation_ratio, build_twin, measure_null, recalibrate
from pipeline.probes import make_probe
from pipeline.runner import detect_loaded
from pipeline.settings import DetectSettings
from pipeline.sources import load_model, resolve_spec
from pipeline.store import ResultStore

FACTORIES = Path(__file__).with_name("survey_factories.py").resolve()
LITE0 = "tf_efficientnet_lite0.in1k"


def models_row(out: Path) -> dict:
    rows = ResultStore(out).read("models").to_pylist()
    assert len(rows) == 1
    return rows[0]


# -- recalibration ----------------------------------------------------------------------------


def test_running_stats_become_the_probe_average_over_all_batches() -> None:
    # A cumulative average, not an exponential one: an EMA with torch's default momentum 0.1
    # would leave the statistics near their constructed values (mean 0, var 1).
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)).eval()
    images = torch.randn(6, 3, 8, 8) * 3 + 5
    how = recalibrate(net, images, batch_size=2)
    with torch.no_grad():
        pre = net[0](images)
    assert how.method == "running_stats" and how.modules == 1
    assert torch.allclose(net[1].running_mean, pre.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-4)
    # per-batch unbiased variances averaged: close to the pooled variance for equal batch sizes
    assert torch.allclose(net[1].running_var, pre.var(dim=(0, 2, 3)), rtol=0.1)
    assert not net.training and not net[1].training and net[1].momentum == 0.1  # eval, momentum restored


def test_nets_without_running_stats_are_rescaled_to_unit_variance() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1)).eval()
    with torch.no_grad():
        net[0].weight.mul_(40)  # far from unit scale, as an untuned init can be
    images = torch.randn(4, 3, 16, 16)
    how = recalibrate(net, images)
    assert how.method == "lsuv" and how.modules == 2
    with torch.no_grad():
        first = net[0](images)
        second = net(images)
    assert first.std().item() == pytest.approx(1.0, rel=1e-3)
    assert second.std().item() == pytest.approx(1.0, rel=1e-3)


# -- sources: one random-init rule ----------------------------------------------------------


def test_py_factories_honour_random_init_with_reset_parameters(tmp_path: Path, monkeypatch) -> None:
    # A factory that returns weights of its own (a checkpoint's, here constants), not its default init.
    factory = tmp_path / "trained_factory.py"
    factory.write_text(
        "import torch\n"
        "from survey_factories import tiny_cnn\n"
        "def trained():\n"
        "    model = tiny_cnn()\n"
        "    with torch.no_grad():\n"
        "        for p in model.parameters():\n"
        "            p.fill_(0.01)\n"
        "    return model\n"
    )
    monkeypatch.syspath_prepend(str(FACTORIES.parent))
    spec = f"py:{factory}:trained"
    (trained_ref,) = resolve_spec(spec)
    (random_ref,) = resolve_spec(spec, random_init=True)
    assert random_ref.model_id == trained_ref.model_id + "@random-init" and not random_ref.pretrained
    trained = load_model(trained_ref).model.state_dict()
    fresh = load_model(random_ref).model.state_dict()
    again = load_model(random_ref).model.state_dict()
    assert any(not torch.equal(trained[k], fresh[k]) for k in trained)  # reset_parameters ran
    assert all(torch.equal(fresh[k], again[k]) for k in fresh)  # under the fixed seed


def test_timm_tags_share_one_twin_per_architecture() -> None:
    from pipeline.sources import ModelRef, random_init_ref

    a = random_init_ref(ModelRef("timm:resnet50.a1_in1k", "timm", "resnet50.a1_in1k"))
    b = random_init_ref(ModelRef("timm:resnet50.tv_in1k", "timm", "resnet50.tv_in1k"))
    assert a == b and a.model_id == "timm:resnet50@random-init" and not a.pretrained


# -- the regime check and the done-when on the shared Lite0 ---------------------------------


@pytest.mark.shared_models
@pytest.mark.slow
def test_recalibrated_twin_runs_in_the_trained_regime_and_the_constructed_one_does_not(shared_models) -> None:
    lite = load_model(f"local-dir:{shared_models / LITE0}")
    images = make_probe("photos", 8, lite.preprocess)
    twin = build_twin(lite.ref).model
    before = activation_ratio(lite.model, twin, images, batch_size=8)
    recalibrate(twin, images, batch_size=8)
    after = activation_ratio(lite.model, twin, images, batch_size=8)
    # Median |log10| of the std ratio at the padded convs' inputs: measured ~4.9 before (activations
    # 10^4-10^5 times the trained ones), ~0.2 after.
    assert before > 1.0
    assert after < 0.5


@pytest.mark.shared_models
@pytest.mark.slow
def test_lite0_has_ten_times_the_pans_of_its_recalibrated_null_through_the_cli(lite0_cache, tmp_path, capsys) -> None:
    out = tmp_path / "res"
    assert main(["detect", f"hf-hub:timm/{LITE0}", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    row = models_row(out)
    pans, null = row["pans"], row["null_pans"]
    assert row["null_model_id"] == f"hf-hub:timm/{LITE0}@random-init@224x224"
    assert row["null_recalibration"] == "running_stats" and row["null_padded_neurons"] == row["padded_neurons"]
    assert pans >= 10 * max(null, 1), (pans, null)
    assert "null twin" in printed
    twin_rows = pq.read_table(next((out / "null_neurons").glob("*.parquet")))
    assert twin_rows.num_rows == row["null_padded_neurons"]
    assert set(twin_rows.column("model_id").to_pylist()) == {row["null_model_id"]}
    assert sum(twin_rows.column("is_pan").to_pylist()) == null
    config = json.loads(ResultStore(out).read("runs").to_pylist()[0]["config_json"])
    assert config["result_settings"]["null_twin"]["seed"] == 0
    assert "cumulative" in config["result_settings"]["null_twin"]["recalibration"]

    # The same twin without recalibration (the old null: constructed BatchNorm statistics) would
    # pass for "as many PANs as the trained model": the recalibration is what separates them.
    (ref,) = resolve_spec(f"hf-hub:timm/{LITE0}")
    constructed = build_twin(ref).model
    images = make_probe("photos", 16, load_model(ref).preprocess)
    old_null = detect_pans(constructed, images, device="cpu").summary["pans"]
    assert pans < 10 * max(old_null, 1), (pans, old_null)


# -- the CLI: random-init is its own null; --no-null; an export twin equals --random-init -----


def test_a_random_init_model_is_its_own_recalibrated_null(tiny_timm_export, tmp_path) -> None:
    folder = tiny_timm_export("test_resnet", seed=3)
    common = ["--num-images", "4", "--image-size", "64", "--device", "cpu"]
    trained, fresh = tmp_path / "trained", tmp_path / "fresh"
    assert main(["detect", f"local-dir:{folder}", "--out", str(trained), *common]) == 0
    assert main(["detect", f"local-dir:{folder}", "--random-init", "--out", str(fresh), *common]) == 0
    t, f = models_row(trained), models_row(fresh)
    assert f["recalibration"] == "running_stats" and f["null_model_id"] is None and f["null_pans"] is None
    assert not (fresh / "null_neurons").exists() or not any((fresh / "null_neurons").glob("*.parquet"))
    # The twin of the trained export is exactly the --random-init model, measured the same way.
    assert t["null_model_id"] == f"{f['model_id']}@64x64"
    assert (t["null_pans"], t["null_padded_neurons"]) == (f["pans"], f["padded_neurons"])
    twin = pq.read_table(next((trained / "null_neurons").glob("*.parquet")))
    mine = ResultStore(fresh).read("neurons")
    # One function fits both to the probe (null_twin.fitted_to_probe): the twin's rows are the model's,
    # number for number up to float summation order (the twin ran beside its model with one of the two
    # torch threads: null_twin.MeasuredBeside); a random-init model recalibrated another way, e.g. with
    # the unbiased variance a separate train-mode pass stores, differs by n/(n-1): 6e-5 even on the
    # largest map here (4 images of 64x64), 6% on the smallest.
    a, b = twin.column("max_abs_own_z").to_pylist(), mine.column("max_abs_own_z").to_pylist()
    assert len(a) == len(b) > 0 and a == pytest.approx(b, rel=1e-5)
    assert twin.column("is_pan").to_pylist() == mine.column("is_pan").to_pylist()


def test_no_null_leaves_the_columns_null(tmp_path) -> None:
    out = tmp_path / "res"
    argv = ["detect", f"py:{FACTORIES}:tiny_cnn", "--out", str(out), "--num-images", "2", "--no-null"]
    assert main(argv) == 0
    row = models_row(out)
    assert row["null_model_id"] is None and row["null_pans"] is None
    assert DetectSettings(null=False).config_id != DetectSettings().config_id


# -- the survey: one twin per architecture ---------------------------------------------------


class _Job:
    def __init__(self, name: str, group: str | None) -> None:
        self.name, self.null_group, self.measure_null = name, group, True


def test_survey_measures_each_twin_once_and_hands_it_on_after_a_failure() -> None:
    from pipeline.survey.driver import NullTwins

    nulls = NullTwins(DetectSettings())
    a1, a2, a3, b1 = _Job("a1", "A"), _Job("a2", "A"), _Job("a3", "A"), _Job("b1", "B")
    assert nulls.dispatch(a1) == [a1] and a1.measure_null
    assert nulls.dispatch(a2) == [] and nulls.dispatch(a3) == []  # wait for A's twin
    assert nulls.dispatch(b1) == [b1] and b1.measure_null  # another architecture runs at once
    handed = nulls.failed(a1)  # the measuring model failed: the next one measures the twin
    assert handed == [a2] and a2.measure_null
    released = nulls.measured(a2)
    assert released == [a3] and not a3.measure_null
    late = _Job("a4", "A")
    assert nulls.dispatch(late) == [late] and not late.measure_null
    assert nulls.parked == {"A": deque()} or not nulls.parked.get("A")


def test_a_twin_group_names_its_own_twin_id_and_no_other() -> None:
    """The id the runner writes is the one the survey's group recognises; a prefix architecture,
    another size or text of another form is not it."""
    from pipeline.sources import null_model_id, split_null_model_id
    from pipeline.survey.null_twins import NullTwins, TwinGroup

    ref = resolve_spec("timm:resnet50.a1_in1k")[0]
    nid = null_model_id(ref, 32, 48)
    assert nid == "timm:resnet50@random-init@32x48"
    assert split_null_model_id(nid) == ("timm:resnet50@random-init", 32, 48)
    assert split_null_model_id("timm:resnet50@random-init") is None
    square = null_model_id(ref, 32, 32)
    assert TwinGroup("timm:resnet50@random-init", 32).names(square)
    assert not TwinGroup("timm:resnet50@random-init", 32).names(nid)  # another input size
    assert not TwinGroup("timm:resnet50@random-init", 48).names(square)
    assert TwinGroup("timm:resnet50@random-init", None).names(nid)  # the model's own size: any
    assert not TwinGroup("timm:resnet5@random-init", None).names(nid)  # not a prefix match
    assert not TwinGroup("timm:resnet50", None).names(square)
    nulls = NullTwins(DetectSettings(image_size=32))
    assert nulls.group(ref) == TwinGroup("timm:resnet50@random-init", 32)
    assert nulls.group(resolve_spec("timm:resnet50.tv_in1k")[0]) == nulls.group(ref)  # one twin, two tags
    assert nulls.group(resolve_spec("timm:resnet50", random_init=True)[0]) is None  # a twin itself


def test_a_twin_already_in_the_folder_is_not_measured_again(tmp_path) -> None:
    """Resume: a twin in the folder (own file, then compacted) is reused; one of another input size is not."""
    from dataclasses import replace

    from pipeline.compact import compact
    from pipeline.runner import run_model
    from pipeline.store import file_key, is_compacted
    from pipeline.survey.driver import NullTwins

    settings = DetectSettings(num_images=2, image_size=32, device="cpu")
    ref = resolve_spec(f"py:{FACTORIES}:tiny_cnn")[0]
    store = ResultStore(tmp_path / "res")
    store.ensure()

    def measures(settings: DetectSettings) -> bool:
        nulls = NullTwins(settings, ResultStore(store.root))
        job = _Job("a", nulls.group(ref))
        assert nulls.dispatch(job) == [job]
        return job.measure_null

    assert measures(settings)  # an empty folder: the first model measures it
    store.write_model(run_model(ref, settings), file_key(ref.model_id, settings.config_id))
    assert not measures(settings)
    assert measures(replace(settings, image_size=48))  # another twin (input size, config)
    compact(store.root)
    assert all(is_compacted(p) for p in (store.root / "null_neurons").glob("*.parquet"))
    assert not measures(settings)


@pytest.mark.ray
def test_survey_writes_the_twin_and_fills_its_counts(ray_local, tmp_path) -> None:
    from pipeline.survey import SurveyOptions, run_survey

    out = tmp_path / "res"
    settings = DetectSettings(num_images=2, image_size=32, device="cpu")
    specs = [f"py:{FACTORIES}:tiny_cnn", "resnet10t"]
    summary = run_survey(specs[:1], out, settings, SurveyOptions(progress="off"))
    assert summary.done == 1
    row = models_row(out)
    from pipeline.sources.base import portable_path

    assert row["null_model_id"] == f"py:{portable_path(FACTORIES)}:tiny_cnn@random-init@32x32"
    twin = pq.read_table(next((out / "null_neurons").glob("*.parquet")))
    assert (row["null_pans"], row["null_padded_neurons"]) == (sum(twin.column("is_pan").to_pylist()), twin.num_rows)
    assert ResultStore(out).null_counts(row["null_model_id"], row["config_id"]) == (
        row["null_pans"],
        row["null_padded_neurons"],
    )


# -- reading: PANs next to the null; old folders ------------------------------------------------


def test_stats_report_and_query_show_the_null_and_read_old_folders(tmp_path, capsys) -> None:
    import pyarrow.compute as pc

    from analysis.connection import open_results

    new, old = tmp_path / "new", tmp_path / "old"
    argv = ["--num-images", "2", "--image-size", "32", "--device", "cpu"]
    assert main(["detect", f"py:{FACTORIES}:tiny_cnn", "--out", str(new), *argv]) == 0
    con = open_results(new)
    (row,) = con.execute("SELECT pans, null_pans, ratio_to_null FROM pans_vs_null").fetchall()
    stored = models_row(new)
    assert row[:2] == (stored["pans"], stored["null_pans"])
    assert row[2] == pytest.approx(stored["pans"] / max(stored["null_pans"], 1))
    # Under --tau the twin is re-classified by the same rule as the model (tau 1e-3: every live neuron).
    low = open_results(new, tau=1e-3)
    (n,) = low.execute("SELECT null_pans FROM pans_vs_null").fetchall()[0]
    assert n > stored["null_pans"]

    # An older folder: models without the null columns, no null_neurons table.
    assert main(["detect", f"py:{FACTORIES}:tiny_cnn", "--out", str(old), *argv]) == 0
    models_file = next((old / "models").glob("*.parquet"))
    t = pq.read_table(models_file)
    pq.write_table(t.drop_columns([c for c in t.column_names if "null" in c or c == "recalibration"]), models_file)
    for f in (old / "null_neurons").glob("*.parquet"):
        f.unlink()
    (old / "null_neurons").rmdir()
    capsys.readouterr()
    assert main(["stats", str(old)]) == 0
    assert "pans_vs_null" in capsys.readouterr().out
    assert main(["report", str(old), "--out", str(tmp_path / "r.html")]) == 0
    assert "No null twins" in (tmp_path / "r.html").read_text()
    gap = open_results(old).execute("SELECT models, models_with_null FROM null_gap").fetchall()
    assert gap == [(1, 0)]
    assert pc.sum(ResultStore(old).read("models")["pans"]).as_py() == stored["pans"]


def test_the_one_pass_fit_measures_what_recalibration_does_and_keeps_the_statistics() -> None:
    # fitted_to_probe skips the separate recalibration pass when the probe is one batch; the numbers
    # must be those of the recalibrated twin (a shortcut that kept the constructed statistics would
    # not be), and the model must keep the probe's statistics for what runs after detection
    # (impact experiments on a --random-init model; a shortcut that dropped them would not).
    from pipeline.null_twin import fitted_to_probe, measure_null
    from pipeline.sources import ModelRef, Preprocess

    ref = ModelRef("timm:test_resnet.r160_in1k", "timm", "test_resnet.r160_in1k")  # its twin needs no weights
    images = make_probe("photos", 4, Preprocess().with_image_size(64))
    settings = DetectSettings(num_images=4, image_size=64, batch_size=4, device="cpu")
    fast = measure_null(ref, images, settings)
    twin = build_twin(ref).model
    recalibrate(twin, images, batch_size=4)
    slow = detect_pans(twin, images, device="cpu", model_id=fast.model_id, config_id=settings.config_id)
    a = fast.neurons.column("max_abs_own_z").to_pylist()
    b = slow.neurons.column("max_abs_own_z").to_pylist()
    assert len(a) == len(b) > 0
    assert max(abs(x - y) for x, y in zip(a, b, strict=True) if x is not None) < 1e-2 * max(1.0, max(map(abs, b)))
    assert fast.pans == slow.summary["pans"]
    constructed = detect_pans(build_twin(ref).model, images, device="cpu").neurons.column("max_abs_own_z").to_pylist()
    assert max(abs(x - y) for x, y in zip(constructed, b, strict=True) if x is not None) > 0.1
    # After the block: eval mode, the probe's statistics stored (those recalibration stores, up to n/(n-1)).
    fitted = build_twin(ref).model
    with fitted_to_probe(fitted, images, batch_size=4) as how:
        detect_pans(fitted, images, device="cpu")
    assert how.method == "running_stats" and not fitted.training
    norms = [m for m in fitted.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    ref_norms = [m for m in twin.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(not m.training and m.momentum == 0.1 for m in norms)
    for m, r in zip(norms, ref_norms, strict=True):
        torch.testing.assert_close(m.running_mean, r.running_mean, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(m.running_var, r.running_var, rtol=1e-4, atol=1e-5)


def test_the_one_pass_fit_takes_a_model_with_a_five_dimensional_parameter() -> None:
    # On CPU the fit runs a BatchNorm net channels-last; Module.to(memory_format=...) raises on a 5-d
    # parameter (timm's lambda layers: lambda_resnet26t failed in the one-per-family zoo run).
    from pipeline.null_twin import fitted_to_probe

    class Lambdaish(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.bn = nn.BatchNorm2d(8)
            self.pos = nn.Parameter(torch.zeros(1, 1, 8, 4, 4))  # rank 5

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.bn(self.conv(x)) + self.pos.sum()

    torch.manual_seed(0)
    net, images = Lambdaish(), torch.randn(4, 3, 16, 16)
    with fitted_to_probe(net, images, batch_size=4) as how:
        result = detect_pans(net, images, device="cpu")
    assert how.method == "running_stats" and result.summary["padded_neurons"] == 8
    assert net.conv.weight.is_contiguous(memory_format=torch.channels_last) and net.pos.dim() == 5


# -- the twin beside its model (null_twin.MeasuredBeside) ------------------------------------


@pytest.fixture
def torch_threads():
    """Set torch's thread count for one test; restored after it."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def test_on_two_threads_the_twin_runs_in_a_thread_of_its_own_during_the_block(torch_threads) -> None:
    torch_threads(2)
    block_started, seen = threading.Event(), {}

    def measure():
        # Returns only once the block has started: measured after the block, this would time out.
        seen["block ran first"] = block_started.wait(timeout=30)
        seen["thread"], seen["threads"] = threading.current_thread().name, torch.get_num_threads()
        return "twin"

    with MeasuredBeside(measure, torch.device("cpu")) as beside:
        block_started.set()
        in_block = torch.get_num_threads()
    assert beside.result() == "twin" and seen["block ran first"]
    assert seen["thread"] != threading.current_thread().name
    assert seen["threads"] == in_block == 1  # half each
    assert torch.get_num_threads() == 2  # and all of them back after it


@pytest.mark.parametrize("threads, device", [(1, "cpu"), (2, "cuda")])
def test_elsewhere_the_twin_is_measured_when_asked_in_the_callers_thread(torch_threads, threads, device) -> None:
    torch_threads(threads)
    calls = []
    with MeasuredBeside(lambda: calls.append(threading.current_thread().name) or "twin", torch.device(device)) as b:
        assert not calls
    assert not calls  # not at the end of the block either: a model that measured nothing fails first
    assert b.result() == "twin" and calls == [threading.current_thread().name]


def test_a_twin_that_fails_raises_for_the_caller_and_a_failing_block_waits_for_the_twin(torch_threads) -> None:
    torch_threads(2)

    def broken():
        raise ModelLoadError("the twin cannot be built")

    with MeasuredBeside(broken, torch.device("cpu")) as beside:
        pass
    with pytest.raises(ModelLoadError, match="cannot be built"):
        beside.result()
    finished = []

    def slow():
        time.sleep(0.5)
        finished.append(True)
        return "twin"

    with pytest.raises(PanSurveyError), MeasuredBeside(slow, torch.device("cpu")):
        raise PanSurveyError("the model measured nothing")
    # a survey worker takes its next model now: the twin must not be running beside it any more
    assert finished == [True] and torch.get_num_threads() == 2


def test_a_twin_measured_beside_counts_what_it_counts_after_the_model(tiny_timm_export, torch_threads) -> None:
    settings = DetectSettings(num_images=4, image_size=64, device="cpu")
    loaded = load_model(f"local-dir:{tiny_timm_export('test_resnet', seed=3)}")
    rows = {}
    for threads in (2, 1):  # beside, then after
        torch_threads(threads)
        tables = detect_loaded(loaded, settings)
        rows[threads] = (tables["models"].to_pylist()[0], tables["null_neurons"])
    (beside, beside_rows), (after, after_rows) = rows[2], rows[1]
    assert (beside["null_pans"], beside["null_padded_neurons"]) == (after["null_pans"], after["null_padded_neurons"])
    assert beside_rows.num_rows == after_rows.num_rows > 0
    a, b = (t.column("max_abs_own_z").to_pylist() for t in (beside_rows, after_rows))
    assert a == pytest.approx(b, rel=1e-5)  # both ran on one thread: the same sums


# -- the twin's draws beside its pass (null_twin.DrawnBeside) -----------------------------------


def _deferred_twin(name: str):
    ref = resolve_spec(f"timm:{name}")[0]
    loaded = build_twin(ref, defer_fills=True)
    assert loaded.deferred_fills is not None and loaded.deferred_fills.fills  # draws left to run
    cl = prefers_channels_last(loaded.model, torch.device("cpu"))  # as measure_null asks
    drawn = DrawnBeside(loaded.model, loaded.deferred_fills, channels_last=cl)
    return ref, loaded.model, drawn


@pytest.mark.parametrize("name", ["test_resnet", "test_efficientnet", "test_nfnet"])
@pytest.mark.parametrize("drawer", ["the model's thread", "the twin's thread", "both"])
def test_a_twin_drawn_beside_its_pass_has_every_value_of_a_twin_drawn_first(name: str, drawer: str) -> None:
    ref, twin, drawn = _deferred_twin(name)
    assert drawn.waiting_for  # its weights got new storage: its pass has to wait for their draws
    first = build_twin(ref).model  # drawn at the end of its build, as before
    images = torch.randn(2, 3, 64, 64)
    helper = threading.Thread(target=drawn.draw)
    if drawer == "the model's thread":
        helper.start()
        helper.join()
    with torch.no_grad(), drawn.waiting():
        if drawer == "both":
            helper.start()  # draws while the pass below draws what it reaches first
        out = twin(images)
    if drawer == "both":
        helper.join()
    assert not drawn.waiting_for
    mine, theirs = twin.state_dict(), first.state_dict()
    assert mine.keys() == theirs.keys()
    for key in mine:
        assert torch.equal(mine[key], theirs[key]), key  # the same draws from the same state, in order
    to_fastest_layout(first, torch.device("cpu"))  # as detection lays it out
    strides = {k: p.stride() for k, p in first.named_parameters()}
    assert {k: p.stride() for k, p in twin.named_parameters()} == strides  # the same convolution paths
    with torch.no_grad():
        assert torch.allclose(out, first(images), rtol=1e-4, atol=1e-5)  # channels-last against NCHW


@pytest.mark.parametrize("drawer", ["the model's thread", "the twin's thread"])
def test_a_draw_that_fails_ends_the_twins_pass_with_its_error(drawer: str) -> None:
    _ref, twin, drawn = _deferred_twin("test_resnet")
    fills = drawn._fills
    fills[len(fills) // 2] = (fills[len(fills) // 2][0], _no_room, (), {}, False)
    failures = []

    def draw() -> None:
        try:
            drawn.draw()
        except MemoryError as exc:
            failures.append(exc)

    if drawer == "the model's thread":
        helper = threading.Thread(target=draw)
        helper.start()
        helper.join(timeout=30)
        assert len(failures) == 1 and not helper.is_alive()
    expected = (RuntimeError, "drawing the null twin's weights failed") if failures else (MemoryError, "no room")
    with pytest.raises(expected[0], match=expected[1]), torch.no_grad(), drawn.waiting():
        twin(torch.randn(1, 3, 64, 64))  # waits for nothing that can never come
    assert drawn.waiting_for  # what the failed draw left unfilled stays marked so


def _no_room(*_args, **_kwargs):
    raise MemoryError("no room for the weights")


@pytest.mark.parametrize("name", ["test_resnet", "efficientnet_b0"])
def test_beside_its_model_a_twin_hands_its_draws_over_and_counts_the_same(torch_threads, name: str) -> None:
    torch_threads(2)
    settings = DetectSettings(num_images=4, image_size=64, device="cpu")
    ref = resolve_spec(f"timm:{name}")[0]
    built = build_twin(ref)  # a model to detect beside the twin (at random init: no download)
    model = built.model
    images = make_probe(settings.probe, 4, built.preprocess.with_image_size(64), settings.seed)
    with MeasuredBeside(lambda: measure_null(ref, images, settings), torch.device("cpu")) as beside:
        detect_pans(model, images, device="cpu")
    handed = beside.result()
    assert beside.ran_on_block_thread == 1  # the draws went to this thread (at a module call, or at the end)
    torch_threads(1)
    alone = measure_null(ref, images, settings)  # one thread, as the twin's side: the same sums
    assert handed.neurons.equals(alone.neurons) and handed.pans == alone.pans


def test_a_hand_over_after_the_block_has_ended_is_refused(torch_threads) -> None:
    torch_threads(2)
    ran = []

    def measure():
        time.sleep(0.5)  # the empty block below has ended by now
        work = lambda: ran.append(threading.current_thread().name)  # noqa: E731
        if not beside.hand_over(work):
            work()
        return "twin"

    with MeasuredBeside(measure, torch.device("cpu")) as beside:
        pass
    assert beside.result() == "twin" and ran == ["null-twin"] and beside.ran_on_block_thread == 0


class _HeldOutside(nn.Module):
    """A net that draws a tensor it holds as a plain attribute (neither parameter nor buffer)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.scale = torch.empty(1, 4, 1, 1)
        nn.init.normal_(self.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x)) * self.scale


def test_a_drawn_tensor_the_twin_holds_outside_its_parameters_is_waited_for_too() -> None:
    from pipeline.sources.overwritten_fills import overwritten_fills_skipped

    def build(defer: bool):
        with torch.random.fork_rng(devices=[]), overwritten_fills_skipped(defer=defer) as mode:
            torch.manual_seed(0)
            net = _HeldOutside().eval()
        return net, mode.deferred

    first, _ = build(False)
    net, deferred = build(True)
    drawn = DrawnBeside(net, deferred, channels_last=True)
    images = torch.randn(2, 3, 8, 8)
    with torch.no_grad(), drawn.waiting():
        out = net(images)  # nobody else draws: the pass draws what it reaches, the attribute last
    assert torch.equal(net.scale, first.scale) and torch.equal(net.conv.weight, first.conv.weight)
    with torch.no_grad():
        assert torch.allclose(out, first(images), rtol=1e-5, atol=1e-6)
