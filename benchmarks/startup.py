"""Start-up time of the CLI: median wall time of `llada --help`, `llada generate --help`, `llada --version`.

Also checks that none of them imported torch, diffusers, PIL or safetensors. Run:
    python benchmarks/startup.py [--runs 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = (["--help"], ["generate", "--help"], ["chat", "--help"], ["--version"])
PROBE = (
    "import sys, runpy; sys.argv = ['llada'] + sys.argv[1:];"
    "from llada_cli.cli.app import run; code = run(sys.argv[1:]);"
    "heavy = [m for m in ('torch', 'diffusers', 'PIL', 'safetensors') if m in sys.modules];"
    "sys.stderr.write('HEAVY=' + ','.join(heavy) + '\\n'); sys.exit(code)"
)


def time_command(args: list[str], runs: int) -> tuple[float, str]:
    times, heavy = [], ""
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        heavy = proc.stderr.strip().rpartition("HEAVY=")[2]
    return statistics.median(times), heavy


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    runs = parser.parse_args().runs
    print(f"{'command':<28} {'median s':>9}  heavy imports")
    for args in COMMANDS:
        median, heavy = time_command(args, runs)
        print(f"{'llada ' + ' '.join(args):<28} {median:>9.3f}  {heavy or 'none'}")


if __name__ == "__main__":
    main()
