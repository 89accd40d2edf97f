"""The Slurm recipe (cluster/slurm/pans-survey.sbatch) on this one machine: its launch logic starts a
Ray head and a worker through ``srun``, then ``pans survey --address auto`` completes a small survey.

Slurm is replaced by what the script sees of it: the job's variables, set here, and ``srun`` /
``scontrol`` stand-ins on PATH that run each step on this machine (the "nodes" are two Ray nodes
here). Everything this Ray uses is its own (GCS and client ports, a temporary folder), so it
neither joins nor stops another Ray on the machine; the test checks the script stopped its
processes and, should it not have, ends exactly those (by the temporary folder in their command line).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from pipeline.store import ResultStore
from tests.test_survey import FACTORIES

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "cluster" / "slurm" / "pans-survey.sbatch"

SRUN = r"""#!/usr/bin/env bash
# srun stand-in: run the step's command here, as node -w NODE (in SLURMD_NODENAME).
node=""
while [ $# -gt 0 ]; do
    case "$1" in
        -w|--nodelist) node=$2; shift 2 ;;
        --nodelist=*) node=${1#*=}; shift ;;
        -N|-n|--nodes|--ntasks) shift 2 ;;
        --) shift; break ;;
        -*) shift ;;
        *) break ;;
    esac
done
echo "$node $*" >> "$SRUN_LOG"
export SLURMD_NODENAME=$node
exec "$@"
"""

SCONTROL = r"""#!/usr/bin/env bash
# scontrol stand-in: only `scontrol show hostnames a,b,c`.
[ "$1 $2" = "show hostnames" ] || { echo "scontrol stand-in: $*" >&2; exit 1; }
tr ',' '\n' <<< "$3"
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line contains ``text`` (this test's unique Ray folder)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def test_the_sbatch_script_starts_ray_on_the_nodes_and_completes_a_survey(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("srun", SRUN), ("scontrol", SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    # Ray's socket paths are limited to ~100 characters: a short folder of our own under /tmp.
    ray_tmp = Path(tempfile.mkdtemp(prefix="pans-slurm-", dir="/tmp"))
    venv_bin = Path(sys.executable).parent
    out = tmp_path / "results"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{venv_bin}:{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NODELIST": "sim-node1,sim-node2",
        "SLURM_CPUS_PER_TASK": "1",
        "SRUN_LOG": str(tmp_path / "srun.log"),
        "RAY_PORT": str(_free_port()),
        "RAY_START_ARGS": (f"--temp-dir={ray_tmp} --dashboard-agent-listen-port=0 --object-store-memory=100000000"),
        "RAY_WAIT_S": "180",
        "PANS": f"{sys.executable} -m pipeline.cli",
        "PYTHON": sys.executable,
        "HF_HUB_OFFLINE": "1",
    }
    env.pop("RAY_ADDRESS", None)
    specs = ["test_resnet", f"py:{FACTORIES}:tiny_cnn"]  # absolute: the script runs in tmp_path
    args = [
        *specs,
        "--random-init",
        "--out",
        str(out),
        "--num-images",
        "4",
        "--image-size",
        "64",
        "--progress",
        "lines",
    ]
    try:
        proc = subprocess.run(
            ["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=480, cwd=tmp_path
        )
        deadline = time.monotonic() + 40  # a node drains for a few seconds after SIGTERM
        while (left := _processes_mentioning(str(ray_tmp))) and time.monotonic() < deadline:
            time.sleep(1)
    finally:
        for pid in _processes_mentioning(str(ray_tmp)):  # only this test's Ray, never `ray stop`
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(ray_tmp, ignore_errors=True)

    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 nodes up" in proc.stdout, proc.stdout[-2000:]
    steps = (tmp_path / "srun.log").read_text().splitlines()
    assert any(s.startswith("sim-node1 ") and "start --head" in s for s in steps), steps  # head on the first node
    assert any(s.startswith("sim-node2 ") and "start --address=" in s for s in steps), steps  # a worker on the other
    store = ResultStore(out)
    models = store.read("models")
    assert models.num_rows == len(specs) and store.read("failures").num_rows == 0, models.to_pylist()
    assert any(m.startswith("timm:test_resnet") for m in models["model_id"].to_pylist())
    assert left == [], f"the script left Ray processes running: {left}"
