"""Two-process launches on CPU for the DDP tests: torchrun from this venv, gloo, one thread per process."""

import os
import subprocess
import sys
from pathlib import Path


def torchrun() -> str | None:
    path = os.path.join(os.path.dirname(sys.executable), "torchrun")
    return path if os.path.exists(path) else None


def launch(script: str, args: list[str], cwd: Path, timeout: int = 900, processes: int = 2) -> subprocess.CompletedProcess:
    """`torchrun --nproc_per_node N SCRIPT ARGS...` with `script` (Python source) written into `cwd`."""
    path = cwd / "launched.py"
    path.write_text(script)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [torchrun(), "--nproc_per_node", str(processes), str(path), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd)
