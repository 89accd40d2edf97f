"""Benchmark the survey against a plain sequential loop, and download/compute overlap.

    python bench/bench_survey.py speed      # survey vs for-loop on the same models: speedup, overhead
    python bench/bench_survey.py overlap    # throttled stand-in hub: wall vs max(download, compute)
    python bench/bench_survey.py speed --gpu   # on a GPU machine: models/min and GPU utilisation
    python bench/bench_survey.py zoo        # timm's pretrained zoo: tags, CNNs, parameters, GB
    python bench/bench_survey.py zoo-run --per-family 1 [--limit 15]   # survey one architecture per family

Prints numbers; asserts nothing. Random-init timm models (no hub needed) unless stated.
Goals (issue 4): speedup >= 1.6x on 2 cores, fixed overhead <= 0.5 s per model, and with a
throttled hub the wall time within 10% of max(total download, total compute). Issue 11: a cold
survey (Ray start included) <= the faster loop + 5 s, warm >= 1.0x the faster of the 1- and
2-thread loops, fixed overhead <= 0.15 s per model; `speed` prints them side by side in one run,
and the same cold comparison from a cold shell (the loop as a script of its own against the
`pans survey` command, each a fresh process).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pipeline.settings import DetectSettings  # noqa: E402
from pipeline.store import ResultStore  # noqa: E402
from pipeline.survey import SurveyOptions, run_survey  # noqa: E402

SPEED_MODELS = [
    "resnet18",
    "resnet10t",
    "mobilenetv3_large_100",
    "efficientnet_b0",
    "regnetx_004",
    "mobilenetv3_small_100",
    "resnet26",
    "efficientnet_lite0",
]
TINY_MODELS = [
    "test_resnet",
    "test_efficientnet",
    "test_convnext",
    "test_byobnet",
    "test_nfnet",
    "test_efficientnet_gn",
    "test_efficientnet_ln",
    "test_convnext2",
    "test_convnext3",
    "test_efficientnet_evos",
]


def start_ray(num_cpus: int | None = None) -> float:
    import ray

    if ray.is_initialized():
        ray.shutdown()
    t0 = time.perf_counter()
    from pipeline.survey.runtime import connect

    connect(None, num_cpus=num_cpus)  # the embedded runtime exactly as `pans survey` starts it
    return time.perf_counter() - t0


def sequential(specs: list[str], settings: DetectSettings, out: Path) -> float:
    """What a researcher writes: a for loop over models, detect, save (torch uses every core)."""
    from pipeline.runner import run_model
    from pipeline.sources import resolve_spec
    from pipeline.store import ResultStore, file_key

    store = ResultStore(out)
    store.ensure()
    t0 = time.perf_counter()
    for spec in specs:
        try:
            ref = resolve_spec(spec, random_init=True)[0]
            store.write_model(run_model(ref, settings), file_key(ref.model_id, settings.config_id))
        except Exception as exc:  # the loop a researcher writes also has to skip broken models
            print(f"  sequential: {spec} failed: {type(exc).__name__}", file=sys.stderr)
    return time.perf_counter() - t0


def survey(specs: list[str], settings: DetectSettings, out: Path, **options) -> tuple[float, object]:
    opts = SurveyOptions(**{"random_init": True, "progress": "off", **options})
    t0 = time.perf_counter()
    summary = run_survey(specs, out, settings, opts)
    return time.perf_counter() - t0, summary


class GpuSampler:
    """GPU utilisation and memory used, sampled every 0.5 s while a run goes (pynvml when
    installed, else nvidia-smi; no samples on a machine with neither)."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.memory_samples: list[float] = []  # MB used on the device(s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    @staticmethod
    def _read() -> list[tuple[float, float]]:
        """(utilisation %, memory used MB) per GPU."""
        try:
            import pynvml

            pynvml.nvmlInit()
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
            return [
                (float(pynvml.nvmlDeviceGetUtilizationRates(h).gpu), pynvml.nvmlDeviceGetMemoryInfo(h).used / 2**20)
                for h in handles
            ]
        except Exception:  # no pynvml, no driver: nvidia-smi, or nothing
            pass
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout
        return [(float(u), float(m)) for u, m in (line.split(",") for line in out.strip().splitlines())]

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                vals = self._read()
                if vals:
                    self.samples.append(sum(u for u, _ in vals) / len(vals))
                    self.memory_samples.append(sum(m for _, m in vals))
            except (OSError, ValueError, subprocess.SubprocessError):
                pass
            self._stop.wait(0.5)

    def __enter__(self) -> GpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mean(self) -> float:
        return sum(self.samples) / len(self.samples) if self.samples else float("nan")

    @property
    def max(self) -> float:
        return max(self.samples, default=float("nan"))

    @property
    def max_memory_mb(self) -> float:
        return max(self.memory_samples, default=float("nan"))


def bench_speed(args: argparse.Namespace) -> None:
    settings = DetectSettings(num_images=args.num_images)
    specs = args.models or SPEED_MODELS
    tmp = Path(tempfile.mkdtemp(prefix="bench-survey-"))
    cpus = os.cpu_count() or 1
    load_before = os.getloadavg()[0]
    print(
        f"machine: {cpus} CPUs, load average {load_before:.1f}; {len(specs)} models, "
        f"{args.num_images} probe images at native size, random init"
    )

    if args.gpu:
        # GPU: models/min and utilisation; the sequential baseline uses the GPU too.
        import torch

        if not torch.cuda.is_available():
            sys.exit("--gpu: no CUDA device here")
        gpu_settings = replace(settings, device="cuda")
        t_seq = sequential(specs, gpu_settings, tmp / "seq")
        ray_start = start_ray()
        with GpuSampler() as gpu:
            wall, summary = survey(specs, settings, tmp / "survey", gpus_per_model=args.gpus_per_model)
        print(f"sequential on cuda : {t_seq:7.1f} s  {len(specs) / t_seq * 60:6.1f} models/min")
        print(
            f"survey on Ray      : {wall:7.1f} s  {summary.done / wall * 60:6.1f} models/min "
            f"(ray start {ray_start:.1f} s)  GPU utilisation {gpu.mean:.0f}% mean over {len(gpu.samples)} samples"
        )
        print(f"speedup            : {t_seq / wall:.2f}x")
        shutil.rmtree(tmp, ignore_errors=True)
        return

    # 1. Speedup, cold: the survey pays for starting Ray and its workers, as `pans survey` does;
    #    the loop gets its imports (torch, timm, the detector) done before the clock starts.
    import torch

    sequential(TINY_MODELS[:1], replace(settings, seed=1), tmp / "seq-warm-up")
    # The loop and the cold survey alternate --cold-repeats times (a fresh runtime and fresh workers
    # each time); the medians count: on this machine one cold start varies by +-1.5 s.
    seqs, colds, starts = [], [], []
    for i in range(args.cold_repeats):
        seqs.append(sequential(specs, settings, tmp / f"seq{i}"))
        starts.append(start_ray())
        cold_i, summary = survey(specs, settings, tmp / f"survey-cold{i}")
        colds.append(starts[-1] + cold_i)
    t_seq, cold_total, ray_start = statistics.median(seqs), statistics.median(colds), statistics.median(starts)
    # The same loop pinned to one thread: what one core does, to tell parallelism from thread contention.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    t_seq1 = sequential(specs, settings, tmp / "seq-1thread")
    torch.set_num_threads(threads)
    # 2. Warm runtime (workers already up), fresh results folder: the steady state of a long survey.
    warm, _ = survey(specs, settings, tmp / "survey-warm")
    busy = sum(r.task_seconds for r in summary.models)
    print(f"sequential loop    : {t_seq:7.1f} s   ({len(specs) / t_seq * 60:.1f} models/min, torch {threads} threads;"
          f" median of {' '.join(f'{t:.1f}' for t in seqs)})")
    print(f"  same, 1 thread   : {t_seq1:7.1f} s   (survey warm is {t_seq1 / warm:.2f}x this)")
    print(
        f"survey, cold       : {cold_total:7.1f} s   (median of {' '.join(f'{t:.1f}' for t in colds)}; "
        f"ray start median {ray_start:.1f} s)  speedup {t_seq / cold_total:.2f}x"
    )
    print(
        f"survey, warm       : {warm:7.1f} s   speedup {t_seq / warm:.2f}x"
        f"   ({summary.done / warm * 60:.1f} models/min)"
    )
    print(f"  done {summary.done}, failed {summary.failed}; time inside detect tasks {busy:.1f} s over {cpus} slots")

    overhead = bench_overhead(tmp)
    # 3. From a cold shell, as a user meets them: `pans survey` against the loop run as a script;
    #    each is a fresh process that imports what it needs and (the survey) starts Ray.
    #    Alternated --cold-repeats times (this machine's cold starts vary by +-1.5 s); the medians count.
    loops, surveys = [], []
    for i in range(args.cold_repeats):
        loops.append(cold_process([sys.executable, "-c", LOOP_SCRIPT, str(tmp / f"loop-cold{i}"),
                                   str(args.num_images), *specs]))
        surveys.append(cold_process([sys.executable, "-m", "pipeline.cli", "survey", *specs, "--random-init",
                                     "--num-images", str(args.num_images), "--progress", "off",
                                     "--out", str(tmp / f"survey-cli{i}")]))
    cli_loop, cli_survey = statistics.median(loops), statistics.median(surveys)
    print(f"from a cold shell  : loop script {cli_loop:.1f} s, `pans survey` {cli_survey:.1f} s, medians of "
          f"{args.cold_repeats} alternated pairs (loop {' '.join(f'{t:.1f}' for t in loops)}; "
          f"survey {' '.join(f'{t:.1f}' for t in surveys)}; each a fresh process: its own imports; "
          "the survey starts Ray)")
    shutil.rmtree(tmp, ignore_errors=True)
    best = min(t_seq, t_seq1)
    # The load before the bench started (its own work raises the load while it runs).
    note = "" if load_before < 1.0 else f"   (load average {load_before:.1f} before the run: a loaded-machine note)"
    faster = "1 thread" if t_seq1 < t_seq else f"{threads} threads"
    print(f"goals (issue 11.6), against the faster loop ({best:.1f} s, {faster}){note}")
    _goal("cold survey <= loop + 5 s", f"{cold_total:.1f} s <= {best + 5:.1f} s", cold_total <= best + 5)
    _goal("warm survey >= 1.0x loop", f"{best / warm:.2f}x", best / warm >= 1.0)
    _goal("fixed overhead <= 0.15 s/model", f"{overhead:.3f} s", overhead <= 0.15)
    _goal("cold shell: survey <= loop + 5 s", f"{cli_survey:.1f} s <= {cli_loop + 5:.1f} s",
          cli_survey <= cli_loop + 5)


#: The loop of :func:`sequential` as the script a researcher runs: it imports only what it uses.
LOOP_SCRIPT = """
import sys
from pathlib import Path
from pipeline.runner import run_model
from pipeline.settings import DetectSettings
from pipeline.sources import resolve_spec
from pipeline.store import ResultStore, file_key
out, n, specs = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
settings = DetectSettings(num_images=n)
store = ResultStore(out)
store.ensure()
for spec in specs:
    ref = resolve_spec(spec, random_init=True)[0]
    store.write_model(run_model(ref, settings), file_key(ref.model_id, settings.config_id))
"""


def cold_process(cmd: list[str]) -> float:
    """Wall seconds of one fresh process (the repository on its path, the hub offline)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    env.pop("RAY_ADDRESS", None)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        print(f"  {' '.join(cmd[:4])}...: exit {done.returncode}: {done.stderr.strip()[-300:]}", file=sys.stderr)
    return wall


def _goal(what: str, value: str, met: bool) -> None:
    print(f"  {what:32s} {value:24s} {'met' if met else 'NOT met'}")


def bench_overhead(tmp: Path | None = None) -> float:
    """Fixed overhead per model: tiny models (compute ~0) on one slot of a warm runtime vs the loop.

    Both sides use one torch thread, so thread contention on a busy machine cancels out.
    """
    import ray
    import torch

    tmp = tmp or Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    if not ray.is_initialized():
        start_ray()
    cpus = int(ray.cluster_resources().get("CPU", 1))
    tiny = DetectSettings(num_images=1, batch_size=1, image_size=64)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    sequential(TINY_MODELS[:2], replace(tiny, seed=2), tmp / "seq-tiny-warm-up")
    t_seq_tiny = sequential(TINY_MODELS, tiny, tmp / "seq-tiny")
    torch.set_num_threads(threads)
    survey(TINY_MODELS, replace(tiny, seed=1), tmp / "warm-up", cpus_per_model=cpus)  # start the workers first
    t_sur_tiny, s_tiny = survey(TINY_MODELS, tiny, tmp / "survey-tiny", cpus_per_model=cpus)
    n = len(TINY_MODELS)
    print(
        f"tiny models ({n}), one slot, one thread: loop {t_seq_tiny:.2f} s, survey {t_sur_tiny:.2f} s -> "
        f"fixed overhead {(t_sur_tiny - t_seq_tiny) / n:.3f} s per model  (done {s_tiny.done}, failed {s_tiny.failed})"
    )
    return (t_sur_tiny - t_seq_tiny) / n


def bench_overlap(args: argparse.Namespace) -> None:
    """A stand-in hub that sends each weight file in a fixed time: do downloads hide behind compute?"""
    import ray
    from fixtures_hub import export_timm
    from hub_server import StandInHub

    archs = args.models or [
        "resnet10t",
        "mobilenetv3_small_100",
        "regnetx_002",
        "resnet18",
        "efficientnet_lite0",
        "mobilenetv3_large_100",
        "resnet14t",
        "regnetx_004",
    ]
    tmp = Path(tempfile.mkdtemp(prefix="bench-overlap-"))
    hub = StandInHub().start()
    sizes = {}
    for arch in archs:
        folder = export_timm(tmp / "export" / arch, arch)
        files = {p.name: p for p in folder.iterdir() if p.is_file()}
        hub.add_repo(f"bench/{arch}", files)
        sizes[arch] = sum(p.stat().st_size for p in files.values())
    specs = [f"hf-hub:bench/{a}" for a in archs]
    settings = DetectSettings(num_images=args.num_images)
    os.environ.update({"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_TOKEN_PATH": str(tmp / "no-token")})
    os.environ.pop("HF_TOKEN", None)

    os.environ["HF_HOME"] = str(tmp / "hf")
    start_ray()  # after the environment is set: the workers inherit HF_ENDPOINT and HF_HOME

    def empty_cache() -> None:
        shutil.rmtree(tmp / "hf" / "hub", ignore_errors=True)

    survey([specs[0]], replace(settings, seed=99), tmp / "warm-up", random_init=False)  # start the workers (imports)
    # Compute alone: unthrottled hub on localhost, downloads take next to nothing.
    empty_cache()
    compute, c_sum = survey(specs, settings, tmp / "compute-only", max_downloads=1, random_init=False)
    print(
        f"{len(specs)} hub models, {sum(sizes.values()) / 1e6:.0f} MB; compute-only survey {compute:.1f} s "
        f"(fetch total {sum(r.fetch_seconds for r in c_sum.models):.1f} s)"
    )

    for factor in (1.5, 0.5):
        per_file = factor * compute / len(specs)  # one download at a time: total download = factor * compute
        # Every weight file is sent in 8 chunks with a pause after each: a fixed time per file.
        hub.fault("slow", method="GET", path_contains="/model.safetensors", times=len(archs), delay=per_file / 8)
        empty_cache()
        gets = hub.count("GET", "/model.safetensors")
        wall, s = survey(specs, settings, tmp / f"overlap-{factor}", max_downloads=1, random_init=False)
        print(
            f"  weight downloads this run: {hub.count('GET', '/model.safetensors') - gets}; "
            f"per model fetch {[round(r.fetch_seconds, 1) for r in s.models]}"
        )
        download = sum(r.fetch_seconds for r in s.models)
        bound = max(download, compute)
        print(
            f"download {download:6.1f} s (throttled: {per_file:.2f} s per file, one at a time), "
            f"compute {compute:6.1f} s -> survey {wall:6.1f} s = {wall / bound:.3f} x max(download, compute)"
            f"  (done {s.done}, failed {s.failed})"
        )
    hub.stop()
    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)


def bench_zoo(args: argparse.Namespace) -> None:
    """The size of timm's pretrained zoo: tags, CNNs among them, parameters, and GB (params x 4 bytes).

    Every pretrained tag is its own weight file. Each is built on the meta device (no memory, no
    download) with its own head (num_classes), and checked for padded convolutions.
    """
    import json

    import timm
    import torch

    from pipeline.sources import padding_summary

    tags = timm.list_models(pretrained=True)
    rows = []
    t0 = time.perf_counter()
    for i, name in enumerate(tags):
        row = {"tag": name, "arch": name.split(".", 1)[0], "params": None, "padded": None, "convs": None}
        try:
            with torch.device("meta"):
                model = timm.create_model(name, pretrained=False)
            row["params"] = sum(p.numel() for p in model.parameters())
            summary = padding_summary(model)
            row["padded"], row["convs"] = bool(summary["has_padded_convs"]), int(summary["conv_layers"])
        except Exception as exc:
            row["error"] = f"{type(exc).__name__}: {str(exc)[:100]}"
        rows.append(row)
        if args.zoo_progress and i % 100 == 0:
            print(f"  {i}/{len(tags)} in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    built = [r for r in rows if r["params"] is not None]
    cnn = [r for r in built if r["padded"]]
    gb = lambda rs: sum(r["params"] for r in rs) * 4 / 1e9  # noqa: E731 - fp32 estimate
    print(
        f"timm {timm.__version__}: {len(tags)} pretrained tags ({len({r['arch'] for r in rows})} architectures), "
        f"built on meta: {len(built)} in {time.perf_counter() - t0:.0f} s"
    )
    print(
        f"  with padded convolutions (the survey's scope): {len(cnn)} tags, {len({r['arch'] for r in cnn})} "
        f"architectures, {sum(r['params'] for r in cnn) / 1e9:.1f} G params, ~{gb(cnn):.0f} GB at fp32 (estimate)"
    )
    print(
        f"  without padded convolutions: {len(built) - len(cnn)} tags; not buildable on meta: {len(rows) - len(built)}"
    )
    print(
        f"  all built tags: {sum(r['params'] for r in built) / 1e9:.1f} G params, "
        f"~{gb(built):.0f} GB at fp32 (estimate)"
    )
    sizes = sorted(r["params"] for r in cnn)
    if sizes:
        print(
            f"  CNN tag size: median {sizes[len(sizes) // 2] / 1e6:.1f} M params, "
            f"90th percentile {sizes[int(len(sizes) * 0.9)] / 1e6:.1f} M, largest {sizes[-1] / 1e6:.0f} M"
        )
    if args.zoo_json:
        Path(args.zoo_json).write_text(json.dumps(rows))


class MemorySampler:
    """Peak resident memory of this process (the driver) and of its descendants (Ray's workers,
    which an embedded runtime starts under this process), sampled every 0.5 s from /proc."""

    def __init__(self) -> None:
        self.driver_peak = 0
        self.worker_peak = 0  # the largest single descendant
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    @staticmethod
    def _rss(pid: int) -> int:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            pass
        return 0

    @staticmethod
    def _descendants(root: int) -> set[int]:
        parent: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, ValueError, IndexError):  # a process that just ended
                    parent[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        found, frontier = set(), {root}
        while frontier:
            frontier = {p for p, pp in parent.items() if pp in frontier} - found
            found |= frontier
        return found

    def _loop(self) -> None:
        me = os.getpid()
        while not self._stop.is_set():
            self.driver_peak = max(self.driver_peak, self._rss(me))
            workers = [self._rss(p) for p in self._descendants(me)]
            self.worker_peak = max([self.worker_peak, *workers])
            self._stop.wait(0.5)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        import resource

        self.driver_peak = max(self.driver_peak, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def zoo_families(per_family: int, limit: int | None, pick: str) -> list[str]:
    """``per_family`` timm architectures from each family (analysis/families.py); the smallest or
    largest by parameters (counted on the meta device), or the first by name. With ``limit``, that
    many families spread evenly over the alphabetical list."""
    import timm
    import torch

    from analysis.families import family

    groups: dict[str, list[str]] = {}
    for arch in timm.list_models():
        groups.setdefault(family(arch) or arch, []).append(arch)
    names = sorted(groups)
    if limit is not None and limit < len(names):
        names = [names[i * len(names) // limit] for i in range(limit)]

    def params(arch: str) -> float:
        try:
            with torch.device("meta"):
                return sum(p.numel() for p in timm.create_model(arch, pretrained=False).parameters())
        except Exception:
            return float("inf")

    chosen = []
    for name in names:
        members = sorted(groups[name])
        if pick != "first":
            members.sort(key=params, reverse=pick == "largest")
        chosen += members[:per_family]
    return chosen


def bench_zoo_run(args: argparse.Namespace) -> None:
    """One architecture per family, random init, native input size, 4 images: throughput, failures
    by cause, driver and worker peak memory, files written and the time of `pans stats`."""
    from collections import Counter

    import ray

    t0 = time.perf_counter()
    specs = zoo_families(args.per_family, args.limit, args.pick)
    pick_s = time.perf_counter() - t0
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench-zoo-run-"))
    settings = DetectSettings(num_images=4, batch_size=4)
    options = SurveyOptions(random_init=True, progress="lines", timeout_per_model=args.timeout_per_model)
    load = os.getloadavg()[0]
    print(
        f"zoo-run: {len(specs)} architectures ({args.per_family} per family, {args.pick}; picked in {pick_s:.0f} s), "
        f"random init, native size, 4 images; {os.cpu_count()} CPUs, load average {load:.1f}",
        flush=True,
    )
    if ray.is_initialized():
        ray.shutdown()
    with MemorySampler() as memory:
        t0 = time.perf_counter()
        summary = run_survey(specs, out, settings, options)
        wall = time.perf_counter() - t0
    causes = Counter(f"{r.stage}: {r.error_type}" for r in summary.models if r.status == "failed")
    files = [p for p in out.rglob("*") if p.is_file()]
    t0 = time.perf_counter()
    stats = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "stats", str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    stats_s = time.perf_counter() - t0
    neurons = ResultStore(out).read("neurons").num_rows
    gb = 2**30
    print()
    print("| figure | value |")
    print("|---|---|")
    print(f"| models | {len(specs)}: {summary.done} done, {summary.failed} failed, {summary.skipped} skipped |")
    print(f"| wall (Ray start included) | {wall:.0f} s |")
    print(f"| models per minute | {summary.done / wall * 60:.1f} |")
    print(f"| failures by cause | {'; '.join(f'{k} x{v}' for k, v in causes.most_common()) or 'none'} |")
    print(f"| driver peak RSS | {memory.driver_peak / gb:.2f} GB |")
    print(f"| worker peak RSS (largest worker) | {memory.worker_peak / gb:.2f} GB |")
    size_mb = sum(p.stat().st_size for p in files) / 2**20
    print(f"| files written | {len(files)} ({size_mb:.1f} MB), {neurons} neuron rows |")
    print(f"| `pans stats` (CLI, cold process) | {stats_s:.1f} s (exit {stats.returncode}) |")
    for rec in summary.models:
        if rec.status == "failed":
            print(f"  failed: {rec.model_id}: {rec.stage} {rec.error_type}: {(rec.message or '')[:120]}")
    if not args.out:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "part", nargs="?", choices=("speed", "overhead", "overlap", "zoo", "zoo-run", "all"), default="speed"
    )
    parser.add_argument("--models", nargs="*", help="timm architectures (random init)")
    parser.add_argument("--num-images", type=int, default=16)
    parser.add_argument("--cold-repeats", type=int, default=3, help="speed: alternated cold pairs (median)")
    parser.add_argument("--gpu", action="store_true", help="use the GPU path (CUDA machine only)")
    parser.add_argument("--gpus-per-model", type=float, default=0.25)
    parser.add_argument("--zoo-json", help="zoo: also write one row per pretrained tag to this JSON file")
    parser.add_argument("--zoo-progress", action="store_true", help="zoo: print progress to stderr")
    parser.add_argument("--per-family", type=int, default=1, help="zoo-run: architectures per family")
    parser.add_argument("--limit", type=int, default=None, help="zoo-run: this many families (spread evenly)")
    parser.add_argument("--pick", choices=("smallest", "largest", "first"), default="smallest", help="zoo-run")
    parser.add_argument("--timeout-per-model", type=float, default=300, help="zoo-run (seconds)")
    parser.add_argument("--out", help="zoo-run: keep the results in this folder")
    args = parser.parse_args()
    if args.part == "zoo-run":
        if args.per_family < 1 or (args.limit is not None and args.limit < 1):
            parser.error("--per-family and --limit must be at least 1")
        bench_zoo_run(args)
    if args.part in ("speed", "all"):
        bench_speed(args)
    if args.part == "overhead":
        bench_overhead()
    if args.part in ("overlap", "all"):
        bench_overlap(args)
    if args.part in ("zoo", "all"):
        bench_zoo(args)


if __name__ == "__main__":
    main()
