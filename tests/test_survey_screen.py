"""What a survey shows on a terminal: a live bar, one line per failure, the summary (issue 11.2).

A finished model adds no line of its own, so a survey of 200 models fits one screen: the test runs
``pans survey`` on a real pseudo-terminal and renders what it wrote with a terminal emulator
(pyte), as a reader would see it.
"""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pyte  # a terminal emulator (the [test] extra)
import pytest

from tests.test_survey import py

ROOT = Path(__file__).resolve().parents[1]
COLUMNS, ROWS = 120, 50
MODELS = ["test_resnet", "test_efficientnet", "test_convnext", "test_byobnet", "test_nfnet", "test_efficientnet_gn",
          "test_convnext2", "test_efficientnet_evos"]


def _run_on_a_terminal(cmd: list[str], env: dict[str, str], timeout: float = 300) -> tuple[int, bytes]:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        return proc.wait(timeout=max(1.0, deadline - time.monotonic())), bytes(out)
    finally:
        os.close(master)
        if proc.poll() is None:
            os.killpg(proc.pid, 9)


def _rendered_lines(data: bytes) -> list[str]:
    """Every line the terminal showed, scrolled off or not (the bar redraws in place)."""
    screen = pyte.HistoryScreen(COLUMNS, ROWS, history=100_000)
    pyte.ByteStream(screen).feed(data)
    scrolled = ["".join(ch.data for ch in line.values()) for line in screen.history.top]
    return [line.rstrip() for line in [*scrolled, *screen.display] if line.strip()]


@pytest.mark.ray
@pytest.mark.slow
def test_a_finished_model_adds_no_line_only_failures_do(tmp_path: Path) -> None:
    failing = ["no_such_model_xyz", py("broken")]
    cmd = [sys.executable, "-m", "pipeline.cli", "survey", *MODELS, *failing, "--random-init", "--out",
           str(tmp_path / "r"), "--num-images", "2", "--batch-size", "2", "--image-size", "32", "--num-cpus", "2",
           "--no-null"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TERM": "xterm-256color", "COLUMNS": str(COLUMNS)}
    env.pop("RAY_ADDRESS", None)
    code, data = _run_on_a_terminal(cmd, env)
    lines = _rendered_lines(data)
    text = "\n".join(lines)
    assert code == 0, text
    assert "10" in text and "done" in text  # the summary table
    # No finished model has a line of its own (each would make a 200-model survey scroll 200 lines).
    for name in MODELS:
        assert name not in text, text
    # Each failure has its progress line and its summary line; Ray says nothing on the terminal.
    for name in ("no_such_model_xyz", "broken"):
        assert 1 <= sum(name in line for line in lines) <= 2, text
    assert not any(noise in text for noise in ("(raylet)", "WARNING", "Traceback", "INFO")), text
    # The bar (one line, redrawn), two failures, the summary (a table and its footer lines).
    assert len(lines) <= 25, text
