"""Memory admission, quiet output, requests no node can meet, clean stops on signals (issue 11).

The CLI tests run ``pans survey`` in a subprocess on its own embedded Ray runtime with a small
memory budget (``PANS_SURVEY_MEMORY_GB``), as a user would, and read what reached the terminal.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.errors import PanSurveyError
from pipeline.settings import DetectSettings
from pipeline.sources import resolve_spec
from pipeline.store import ResultStore
from pipeline.survey import SurveyOptions, memory, run_survey
from pipeline.survey.feasibility import NodeWait, unmet
from tests.test_survey import SMALL, py

ROOT = Path(__file__).resolve().parents[1]

#: Lines Ray prints on its own (loggers, the raylet's memory-monitor reports, C++ dumps).
RAY_NOISE = re.compile(
    r"\(raylet\)|\bWARNING\b|\bINFO\b|worker\.py|\*\*\* |Traceback|SIGTERM received|running low on memory|memory users"
)


# -- the estimate (no Ray) -------------------------------------------------------------------


def test_estimate_counts_weights_and_scales_activations_with_batch_and_size() -> None:
    ref = resolve_spec(py("mid_a"))[0]
    small = memory.estimate(ref, DetectSettings(batch_size=2, image_size=32))
    big = memory.estimate(ref, DetectSettings(batch_size=8, image_size=64))
    params = 3 * 16 * 9 + 16 + 1024 * 16384 + 16384
    assert small.params == big.params == params
    assert small.weight_bytes == 4 * params  # float32
    assert big.activation_bytes == 4 * 4 * small.activation_bytes  # 4x the batch, 4x the pixels
    assert big.host_bytes > small.host_bytes >= memory.LOAD_COPIES * small.weight_bytes
    on_gpu = memory.estimate(ref, DetectSettings(batch_size=8, image_size=64), on_gpu=True)
    # the model and its null twin (built beside it) on the device, with the activations
    assert on_gpu.device_bytes == 2 * on_gpu.weight_bytes + memory.ACTIVATION_COPIES * on_gpu.activation_bytes
    assert on_gpu.host_bytes < big.host_bytes  # activations live on the device
    no_twin = memory.estimate(ref, DetectSettings(batch_size=8, image_size=64, null=False))
    assert big.host_bytes - no_twin.host_bytes == big.weight_bytes  # --no-null: no twin's weights
    untrained_ref = resolve_spec(py("mid_a"), random_init=True)[0]
    untrained = memory.estimate(untrained_ref, DetectSettings(batch_size=8, image_size=64))
    assert untrained.host_bytes == no_twin.host_bytes - big.weight_bytes  # no checkpoint copy, no second twin
    # A task with two CPUs measures the twin beside the model (null_twin.MeasuredBeside): both passes'
    # activations at once. Not on a GPU, not without a twin, not for a model that is its own twin.
    settings = DetectSettings(batch_size=8, image_size=64)
    two = memory.estimate(ref, settings, cpus=2)
    assert two.host_bytes - big.host_bytes == memory.ACTIVATION_COPIES * big.activation_bytes
    assert memory.estimate(ref, settings, on_gpu=True, cpus=2).device_bytes == on_gpu.device_bytes
    assert memory.estimate(ref, DetectSettings(batch_size=8, image_size=64, null=False), cpus=2) == no_twin
    assert memory.estimate(untrained_ref, settings, cpus=2) == untrained


def test_estimate_counts_the_multiply_accumulates_of_convolutions_and_linear_layers() -> None:
    # mid_a: a 3->16 3x3 padded convolution, an 8x8 pool, a 1024->16384 linear layer.
    ref = resolve_spec(py("mid_a"))[0]
    est = memory.estimate(ref, DetectSettings(batch_size=2, image_size=32))
    assert est.macs == 2 * 16 * 32 * 32 * 3 * 9 + 2 * 16384 * 1024
    big = memory.estimate(ref, DetectSettings(batch_size=4, image_size=64))
    assert big.macs == 4 * 16 * 64 * 64 * 3 * 9 + 4 * 16384 * 1024  # convolution: pixels too; linear: batch only


@pytest.mark.parametrize("arch", ["test_efficientnet", "test_vit", "test_convnext", "test_nfnet"])
def test_the_cheap_meta_estimate_equals_the_full_one(arch: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The driver skips weight fills and shape-keeping ops on meta tensors (memory._cheap_on_meta);
    # every number the estimate reads must be what the full meta build and forward give.
    ref = resolve_spec(arch, random_init=True)[0]
    settings = DetectSettings(batch_size=4, image_size=64)
    cheap = memory.estimate(ref, settings)
    monkeypatch.setattr(memory, "_cheap_on_meta", contextlib.nullcontext)
    full = memory.estimate(ref, settings)
    assert cheap.note is None and cheap.activation_bytes and cheap.macs
    assert (cheap.params, cheap.weight_bytes, cheap.activation_bytes, cheap.macs, cheap.host_bytes) == (
        full.params, full.weight_bytes, full.activation_bytes, full.macs, full.host_bytes
    )


class _KnownCosts:
    """Admission's answers for models of known cost (the driver's ordering, without Ray)."""

    def __init__(self, macs: dict[str, int]) -> None:
        self.macs, self.asked = macs, []

    def refresh(self) -> None:
        pass

    def admit(self, ref, settings):
        self.asked.append(ref.model_id)
        return memory.MemoryEstimate(1, 4, 4, memory.MIN_BYTES, None, macs=self.macs[ref.model_id]), 0.0, None


def test_the_driver_starts_the_costliest_model_of_its_window_first() -> None:
    from collections import deque

    from pipeline.sources import ModelRef
    from pipeline.survey.driver import Survey, _Job

    costs = {"a": 5, "b": 50, "c": 20, "d": 500}
    survey = Survey.__new__(Survey)
    survey.admission = _KnownCosts(costs)
    pending = deque(_Job(ModelRef(k, "py", k), k, SMALL, 0.0) for k in costs)
    order = [survey._costliest(pending, window=3).key for _ in range(4)]
    # b is the costliest of a, b, c; then d enters the window; each model is estimated once.
    assert order == ["b", "d", "c", "a"]
    assert sorted(survey.admission.asked) == sorted(costs) and len(survey.admission.asked) == 4


@pytest.mark.parametrize("can_grow", [False, True])
def test_held_models_go_to_ray_costliest_first_and_only_into_free_slots(can_grow) -> None:
    # Ray starts queued tasks scheduling class by class, not in submission order: with every ready
    # model in its queue, the bench's costliest model started fifth of eight. So a runtime that
    # cannot grow gets at most one task per slot, the costliest held one first; an autoscaling
    # cluster gets them all at once (queued tasks are the demand that adds nodes).
    from pipeline.sources import ModelRef
    from pipeline.survey.driver import Survey, _Job

    costs = {"a": 5, "b": 50, "c": 20, "d": 500}
    survey = Survey.__new__(Survey)
    survey.admission = _KnownCosts(costs)
    survey.admission.can_grow = can_grow
    survey.slots, survey.detecting, survey.ready = 2, {}, []
    sent: list[str] = []

    def send(job):
        sent.append(job.key)
        survey.detecting[job.key] = job

    survey._send_detect = send
    jobs = {k: _Job(ModelRef(k, "py", k), k, SMALL, 0.0) for k in costs}
    for job in jobs.values():
        job.admitted = survey.admission.admit(job.ref, job.settings)
    for k in "abcd":  # ready in this order (e.g. as their downloads end)
        survey._submit_detect(jobs[k])
    if can_grow:
        assert sent == ["a", "b", "c", "d"] and not survey.ready
        return
    assert sent == ["a", "b"] and [j.key for j in survey.ready] == ["c", "d"]  # two slots, both taken
    del survey.detecting["a"]  # a slot frees: the costliest held model takes it
    survey._release_ready()
    assert sent == ["a", "b", "d"] and [j.key for j in survey.ready] == ["c"]
    survey._release_ready()  # no free slot: nothing more
    assert sent == ["a", "b", "d"]


def test_a_model_that_later_ones_keep_overtaking_stops_new_admissions_until_it_starts() -> None:
    # Ray starts whatever fits: a model needing a whole node would wait behind an endless stream of
    # small ones (the zoo run's cait_xs24_384 waited out its 900 s start timeout).
    from pipeline.sources import ModelRef
    from pipeline.survey.driver import Survey, _Job

    survey = Survey.__new__(Survey)
    jobs = [_Job(ModelRef(k, "py", k), k, SMALL, 0.0, submitted=float(i)) for i, k in enumerate("bsmtu")]
    survey.detecting = {j.key: j for j in jobs}
    big, small, *later = jobs
    survey._mark_started(small, 10.0)  # b waits: s was queued after it and started
    assert big.overtaken == 1 and not survey._starving(slots=2)
    survey._mark_started(later[0], 11.0)
    assert big.overtaken == 2 and small.overtaken == 0 and survey._starving(slots=2)
    assert later[1].overtaken == 0  # queued after the ones that started: not overtaken
    survey._mark_started(big, 12.0)
    assert not survey._starving(slots=2)


def test_no_room_names_the_need_and_the_largest_node() -> None:
    est = memory.MemoryEstimate(5_000_000_000, 20_000_000_000, 1, 20_000_000_000, None)
    assert memory.no_room(est, [8e9, 23e9], can_grow=False) is None
    msg = memory.no_room(est, [8e9, 16e9], can_grow=False)
    assert msg == "needs ~20 GB of host memory, the largest node has 16 GB"
    assert memory.no_room(est, [8e9, 16e9], can_grow=True) is None  # an autoscaler may add a bigger node


def test_budget_from_env_and_a_malformed_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(memory.BUDGET_ENV, "0.25")
    assert memory.budget_bytes() == 250_000_000
    assert memory.budget_bytes(2) == 2_000_000_000  # the option wins
    monkeypatch.setenv(memory.BUDGET_ENV, "lots")
    with pytest.raises(PanSurveyError, match="PANS_SURVEY_MEMORY_GB"):
        memory.budget_bytes()


def test_unmet_request_says_what_the_best_node_has() -> None:
    nodes = [{"CPU": 2.0, "memory": 1e9}, {"CPU": 8.0, "GPU": 1.0}]
    assert unmet({"CPU": 1, "GPU": 1}, nodes) is None
    assert unmet({"CPU": 1, "GPU": 0}, nodes) is None
    msg = unmet({"CPU": 1, "GPU": 2}, nodes)
    assert msg is not None and "2 GPUs" in msg and "1 GPU" in msg


# -- requests no node can meet (the tests' shared local runtime) -----------------------------


@pytest.mark.ray
def test_gpu_request_on_a_gpu_less_runtime_fails_before_anything_runs(ray_local, tmp_path: Path) -> None:
    started = time.monotonic()
    options = SurveyOptions(random_init=True, progress="off", gpus_per_model=2)
    with pytest.raises(PanSurveyError, match=r"asks for 2 GPUs.*cannot grow"):
        run_survey([py("tiny_cnn")], tmp_path / "out", SMALL, options)
    assert time.monotonic() - started < 30
    assert not (tmp_path / "out" / "models").exists() or not list((tmp_path / "out" / "models").iterdir())
    assert ray_local.available_resources().get("CPU") == 2  # nothing left queued or running


@pytest.mark.ray
def test_wait_for_nodes_shows_the_wait_and_ends_it(ray_local, tmp_path: Path, capsys) -> None:
    # A joined cluster told it may grow (--wait-for-nodes): the survey waits, says so, then gives up.
    options = SurveyOptions(address="auto", random_init=True, progress="lines", gpus_per_model=1, wait_for_nodes=3)
    started = time.monotonic()
    with pytest.raises(PanSurveyError, match="no node joined within --wait-for-nodes 3 s"):
        run_survey([py("tiny_cnn")], tmp_path / "out", SMALL, options)
    assert 3 <= time.monotonic() - started < 60
    assert "waiting for GPU nodes (1 GPU and 1 CPU per model), 0:0" in capsys.readouterr().out


def test_node_wait_clears_when_a_node_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.survey import feasibility

    nodes = [[{"CPU": 2.0}]]
    monkeypatch.setattr(feasibility, "node_resources", lambda: nodes[0])
    wait = NodeWait({"CPU": 1, "GPU": 1}, limit=100)
    assert wait.check(now=10.0).endswith("0:00")
    assert wait.check(now=75.0).endswith("1:05")
    nodes[0] = [{"CPU": 2.0}, {"CPU": 4.0, "GPU": 1.0}]
    assert wait.check(now=80.0) is None
    with pytest.raises(PanSurveyError):
        nodes[0] = [{"CPU": 2.0}]
        wait.check(now=90.0)
        wait.check(now=300.0)


# -- the whole CLI, in a subprocess ----------------------------------------------------------


def _survey(out: Path, specs: list[str], *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "pipeline.cli", "survey", *specs, "--random-init", "--out", str(out),
           "--num-images", "4", "--batch-size", "4", "--image-size", "32", "--num-cpus", "2", *extra]
    full = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    full.pop("RAY_ADDRESS", None)
    return subprocess.Popen(cmd, cwd=ROOT, env=full, start_new_session=True, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _end_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _intervals(trace: Path) -> dict[str, tuple[float, float]]:
    spans: dict[str, tuple[float, float]] = {}
    for line in trace.read_text().splitlines():
        name, start, end = line.split()
        lo, hi = spans.get(name, (float(start), float(end)))
        spans[name] = (min(lo, float(start)), max(hi, float(end)))
    return spans


def _name(model_id: str) -> str:
    """The factory's name in a ``py:FILE:NAME@random-init`` id."""
    return model_id.rsplit(":", 1)[1].removesuffix("@random-init")


@pytest.mark.ray
@pytest.mark.slow
def test_memory_budget_serialises_refuses_and_keeps_the_terminal_quiet(tmp_path: Path) -> None:
    out, trace = tmp_path / "results", tmp_path / "trace.txt"
    specs = [py("tiny_cnn"), py("huge_head"), py("mid_a"), py("mid_b"), py("stem_then_padding")]
    env = {memory.BUDGET_ENV: "0.25", "PANS_TEST_TRACE": str(trace), "PANS_TEST_SLOW_SECONDS": "1.5"}
    proc = _survey(out, specs, "--progress", "lines", env=env)
    try:
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        _end_group(proc)
    assert proc.returncode == 0, stdout + stderr

    # Estimates (random init, so no checkpoint copy and no null twin): tiny_cnn 0.13 GB, mid_a and mid_b
    # 0.14 GB each (two do not fit 0.25 GB together), huge_head 0.35 GB (fits nowhere).
    # The model bigger than the budget is refused before any task: the first event of the run.
    lines = stdout.splitlines()
    assert lines[0].startswith("[1/5] py:") and "huge_head" in lines[0], stdout
    assert re.search(r"needs ~0\.3\d GB of host memory, the largest node has 0\.25 GB", lines[0]), lines[0]
    failures = {_name(r["model_id"]): r for r in ResultStore(out).read("failures").to_pylist()}
    assert set(failures) == {"huge_head", "stem_then_padding"}
    assert failures["huge_head"]["stage"] == "memory"
    # Issue 11 point 9: a model whose padded convolutions all fall in the padding is a failure, not zeros.
    assert "no padded convolution keeps positions clear of the padding" in failures["stem_then_padding"]["message"]
    done = {_name(m) for m in ResultStore(out).read("models")["model_id"].to_pylist()}
    assert done == {"tiny_cnn", "mid_a", "mid_b"}

    # Two models whose estimates do not fit the budget together ran one after the other.
    spans = _intervals(trace)
    (a0, a1), (b0, b1) = spans["mid_a"], spans["mid_b"]
    assert a1 <= b0 or b1 <= a0, spans

    # Quiet: nothing of Ray's on the terminal; its output and the session logs are in DIR/logs/.
    assert stderr == "", stderr
    noise = [line for line in lines if RAY_NOISE.search(line)]
    assert not noise, noise
    assert len(lines) <= 5 + 20  # one line per model plus the summary
    logs = list((out / "logs").glob("survey-*.log"))
    assert len(logs) == 1 and f"log:     {logs[0]}" in stdout
    assert list((out / "logs").glob("ray-*/raylet.out"))


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_ends_the_survey_cleanly(tmp_path: Path, sig: signal.Signals, code: int) -> None:
    out = tmp_path / "results"
    proc = _survey(out, [py("tiny_cnn"), py("slow_cnn")], "--progress", "lines",
                   env={"PANS_TEST_SLOW_SECONDS": "600"})
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "models").is_dir() and list((out / "models").glob("*.parquet")):
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()
        time.sleep(1.0)  # slow_cnn is in its forward pass now
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        _end_group(proc)
    assert proc.returncode == code, stdout + stderr
    assert stderr.splitlines() == [
        f"pans survey: stopped by {sig.name}; finished models are saved in {out}, rerun to resume"
    ], stderr
    assert not [line for line in stdout.splitlines() if RAY_NOISE.search(line)], stdout
    assert not list(out.rglob("*.tmp"))  # nothing half-written
    assert len(list((out / "models").glob("*.parquet"))) == 1


def test_a_forward_that_blocks_is_not_estimated_and_does_not_stall(tmp_path: Path, monkeypatch) -> None:
    factory = tmp_path / "blocking.py"
    factory.write_text(
        "import time, torch.nn as nn\n"
        "class M(nn.Module):\n"
        "    def __init__(self):\n        super().__init__(); self.conv = nn.Conv2d(3, 4, 3, padding=1)\n"
        "    def forward(self, x):\n        time.sleep(600); return self.conv(x)\n"
        "def make():\n    m = M(); m.pretrained_cfg = {'input_size': (3, 32, 32)}; return m\n"
    )
    monkeypatch.setattr(memory, "FORWARD_SECONDS", 0.5)
    started = time.monotonic()
    est = memory.estimate(resolve_spec(f"py:{factory}:make")[0], SMALL)
    assert time.monotonic() - started < 10
    assert est.activation_bytes is None and est.params == 3 * 4 * 9 + 4 and est.known


@pytest.mark.ray
@pytest.mark.slow
def test_memory_monitor_kills_end_as_failures_not_an_endless_loop(tmp_path: Path) -> None:
    # Ray's memory monitor told the node is always full: it kills every task it sees. Ray alone
    # would re-run the tasks for ever; the survey re-runs each a bounded number of times, then
    # records it, one line per model on the terminal, the monitor's reports in the log.
    out = tmp_path / "results"
    env = {"RAY_memory_usage_threshold": "0.01", "RAY_memory_monitor_refresh_ms": "200",
           "PANS_TEST_SLOW_SECONDS": "5"}
    started = time.monotonic()
    proc = _survey(out, [py("slow_cnn"), py("tiny_cnn")], "--progress", "lines", env=env)
    try:
        stdout, stderr = proc.communicate(timeout=240)
    finally:
        _end_group(proc)
    assert time.monotonic() - started < 240
    assert proc.returncode == 1, stdout + stderr  # nothing could be done
    failures = ResultStore(out).read("failures").to_pylist()
    assert len(failures) == 2 and {f["error_type"] for f in failures} == {"OutOfMemoryError"}
    assert all(f["message"].startswith("out of memory") and "memory monitor" in f["message"] for f in failures)
    log = next((out / "logs").glob("survey-*.log"))
    events = [line for line in stdout.splitlines() if line.startswith("[")]
    assert len(events) == 2 and all(f"details: {log}" in line for line in events), stdout
    assert stderr == "" and not [line for line in stdout.splitlines() if RAY_NOISE.search(line)], stdout
    assert "killed due to the node running low on memory" in log.read_text()  # Ray's report, in full


def test_gpu_share_grows_with_the_device_estimate() -> None:
    gpu = 24e9
    assert memory.gpu_share_for(2e9, gpu, 0.25) == (0.25, None)  # fits a quarter
    assert memory.gpu_share_for(13e9, gpu, 0.25) == (0.75, None)  # 54% of the GPU: three quarters
    assert memory.gpu_share_for(13e9, None, 0.25) == (0.25, None)  # GPU size unknown: as asked
    _, why = memory.gpu_share_for(30e9, gpu, 0.25)
    assert why == "needs ~30 GB of GPU memory, a GPU has 24 GB"


def test_detect_at_a_size_that_measures_nothing_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    # Issue 11 point 9: at 1x1 px every padded neuron is skipped; no empty model is written.
    from pipeline.cli import main

    out = tmp_path / "out"
    assert main(["detect", py("tiny_cnn"), "--image-size", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no padded convolution keeps positions clear of the padding" in err[0]
    assert "0 neurons measured, 20 skipped" in err[0]
    assert not out.exists()
    # A size at which some neurons are measured still works (the others are reported as skipped).
    assert main(["detect", py("tiny_cnn"), "--image-size", "4", "--out", str(out)]) == 0
