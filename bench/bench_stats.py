"""Benchmark: ``pans stats`` over ~10 million neuron rows in 500 per-model files, before and after compaction.

Goal (issue 5): at most 2 s after compaction on a 2-core machine. Prints the numbers; asserts nothing
about time. The data is synthetic but schema-true (analysis/synthetic.py: every column of
pipeline/schema.py, kernels included). Compaction is ``pipeline.compact.compact`` (``pans compact``);
without it (older checkout) a stand-in pyarrow merge in this file is used, and the output says so.

    .venv/bin/python bench/bench_stats.py                      # 500 models, 10M neurons, in /tmp
    .venv/bin/python bench/bench_stats.py --neurons 1000000    # smaller, quicker
    .venv/bin/python bench/bench_stats.py --dir D --reuse      # reuse a generated (uncompacted) folder

Also prints the start-up cost of commands that only read results (``pans query DIR "select 1"``,
goal under 0.5 s; ``pans stats --help``), next to the import time of torch they must not pay.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _write_models(args: tuple[str, list[int], int, int]) -> int:
    import numpy as np

    from analysis.synthetic import ARCHITECTURES, CONFIG_ID, model_tables
    from pipeline.store import ResultStore, file_key

    root, indices, per_model, seed = args
    store = ResultStore(root)
    rows = 0
    for i in indices:
        rng = np.random.default_rng([seed, i])
        tables = model_tables(i, ARCHITECTURES[i % len(ARCHITECTURES)], per_model, rng)
        store.write_model(tables, file_key(tables["models"]["model_id"][0].as_py(), CONFIG_ID))
        rows += tables["neurons"].num_rows
    return rows


def generate(root: Path, models: int, neurons: int, workers: int, seed: int = 0) -> int:
    from analysis.synthetic import build_folder

    build_folder(root, models=0, failures=20, seed=seed)  # the folder, failures and a run
    per_model = neurons // models
    chunks = [(str(root), list(range(w, models, workers)), per_model, seed) for w in range(workers)]
    with ProcessPoolExecutor(workers) as pool:
        return sum(pool.map(_write_models, chunks))


def count_files(root: Path) -> int:
    return sum(1 for _ in root.glob("*/*.parquet"))


def time_cli(root: Path, repeat: int) -> tuple[list[float], list[float], str]:
    """Wall and CPU (user + system) time of the real command, ``pans stats DIR``, in a fresh process.

    CPU time is reported too because wall time on a shared machine depends on what else runs.
    """
    times, cpu, out = [], [], ""
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", "stats", str(root)],
            capture_output=True,
            text=True,
            cwd=REPO,
            check=True,
        )
        times.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        out = proc.stdout
    return times, cpu, out


def time_light_commands(root: Path, repeat: int) -> dict[str, list[float]]:
    """Wall time of commands that only read results, each in a fresh process (issue 12: no torch import).

    ``pans query DIR "select 1"`` is the start-up cost every query pays (goal: under 0.5 s);
    ``pans stats --help`` the cost of building the command line.
    """
    commands = {
        'pans query DIR "select 1"': ["query", str(root), "select 1"],
        "pans stats --help": ["stats", "--help"],
        "python -c 'import torch' (for scale)": None,
    }
    times: dict[str, list[float]] = {}
    for label, argv in commands.items():
        cmd = [sys.executable, "-m", "pipeline.cli", *argv] if argv else [sys.executable, "-c", "import torch"]
        for _ in range(repeat):
            start = time.perf_counter()
            subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=True)
            times.setdefault(label, []).append(time.perf_counter() - start)
    return times


def time_in_process(root: Path, repeat: int) -> list[float]:
    from pipeline.commands.stats import stats_text

    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        stats_text(str(root))
        times.append(time.perf_counter() - start)
    return times


def compact_folder(root: Path) -> str:
    try:
        from pipeline.compact import compact
    except ImportError:
        _stand_in_compact(root)
        return "bench stand-in (pyarrow, row groups of 1M rows)"
    compact(root)
    return "pipeline.compact.compact (pans compact)"


def _stand_in_compact(root: Path, group_rows: int = 1_000_000) -> None:
    """Merge each table's files into one file with row groups of ``group_rows`` (no crash safety)."""
    import pyarrow.parquet as pq

    from pipeline.schema import TABLES

    for table in ("neurons", "layers", "models"):
        files = sorted((root / table).glob("*.parquet"))
        if len(files) < 2:
            continue
        out = root / table / "compacted-bench.parquet.tmp"
        with pq.ParquetWriter(out, TABLES[table], compression="zstd") as writer:
            for f in files:
                writer.write_table(pq.read_table(f).cast(TABLES[table]), row_group_size=group_rows)
        for f in files:
            f.unlink()
        out.rename(root / table / "compacted-bench.parquet")


def time_stats(root: Path, repeat: int, when: str) -> tuple[list[float], str]:
    """Time ``pans stats`` in a fresh process and in this one; print the figures; return the CLI times and output."""
    print(f"load average before timing: {os.getloadavg()[0]:.1f}")
    cli, cpu, out = time_cli(root, repeat)
    in_process = time_in_process(root, repeat)
    print(summary(f"pans stats, {when} (CLI process)", cli))
    print(summary("  CPU time of that process (user + system)  ", cpu))
    print(summary(f"pans stats, {when} (in process) ", in_process))
    return cli, out


def summary(label: str, times: list[float]) -> str:
    return f"{label}: best {min(times):.2f} s, median {statistics.median(times):.2f} s over {len(times)} runs"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/pans-bench-stats"))
    parser.add_argument("--models", type=int, default=500)
    parser.add_argument("--neurons", type=int, default=10_000_000, help="neuron rows in all")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="processes generating the data")
    parser.add_argument("--reuse", action="store_true", help="reuse --dir if it holds data (skips generating)")
    parser.add_argument("--keep", action="store_true", help="keep --dir afterwards")
    args = parser.parse_args()

    root: Path = args.dir
    print(f"machine: {os.cpu_count()} CPUs; python {sys.version.split()[0]}")
    if args.reuse and (root / "models").is_dir() and any((root / "models").glob("*.parquet")):
        print(f"reusing {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
        start = time.perf_counter()
        rows = generate(root, args.models, args.neurons, args.workers)
        print(f"generated {rows:,} neuron rows for {args.models} models in {time.perf_counter() - start:.0f} s")
    size = sum(f.stat().st_size for f in root.rglob("*.parquet")) / 1e9
    print(f"folder {root}: {count_files(root)} parquet files, {size:.2f} GB")

    _, before_out = time_stats(root, args.repeat, "before compaction")
    start = time.perf_counter()
    how = compact_folder(root)
    print(f"compacted with {how} in {time.perf_counter() - start:.1f} s: {count_files(root)} parquet files now")
    after_cli, after_out = time_stats(root, args.repeat, "after compaction ")
    same = before_out == after_out
    print(f"same statistics before and after compaction: {same}")
    goal = min(after_cli) <= 2.0
    print(f"goal (<= 2 s after compaction, CLI): {'met' if goal else 'NOT met'} ({min(after_cli):.2f} s)")
    for label, times in time_light_commands(root, args.repeat).items():
        print(summary(f"{label:42s}", times))
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
