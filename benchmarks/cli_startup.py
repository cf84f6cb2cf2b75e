"""Wall time of `autolr --help` and `autolr validate quickstart` (fresh interpreter each run).

Prints one JSON object. Goal: `--help` under 0.5 s (torch, timm, accelerate, datasets stay unimported).
    python benchmarks/cli_startup.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time


def wall(args: list[str], repeat: int) -> dict[str, float]:
    """Wall time of `python -m autolr ARGS`, or of bare `python ARGS` when ARGS starts with `-c`."""
    times = []
    cmd = [sys.executable, *([] if args[0] == "-c" else ["-m", "autolr"]), *args]
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return {"median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3)}


def heavy_imports() -> list[str]:
    """Which heavy modules `import autolr.cli` pulls in (should be none)."""
    code = "import sys, autolr.cli; print(','.join(m for m in ('torch','timm','accelerate','datasets','matplotlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.strip()
    return [m for m in out.split(",") if m]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    result = {
        "benchmark": "cli_startup",
        "python": sys.version.split()[0],
        "bare_python": wall(["-c", "pass"], args.repeat),  # the floor on this machine, for context
        "help": wall(["--help"], args.repeat),
        "validate": wall(["validate", "quickstart"], args.repeat),
        "heavy_imports_at_cli_start": heavy_imports(),
        "goal_help_s": 0.5,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
