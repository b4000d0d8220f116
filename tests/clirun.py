"""Running the installed `loa` console script as a user would, in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

LOA = str(Path(sys.executable).parent / "loa")


def loa_env(db_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOA_")}
    env.update(
        LOA_DATABASE_URL=db_url,
        LOA_DATA_DIR=str(data_dir),
        LOA_CONSOLE_SINK=str(data_dir / "sink.jsonl"),
        # These tests run on the real clock, at any hour: send windows are tested with a fake
        # clock elsewhere (tests/test_gate.py, tests/test_windows.py).
        LOA_WINDOW_QC="always",
        LOA_WINDOW_INFO="always",
        LOA_WINDOW_CARE="always",
    )
    env.update(extra)
    return env


def run_loa(
    *args: str, env: dict[str, str], check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([LOA, *args], env=env, capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"loa {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result
