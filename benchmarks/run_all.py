"""`make bench`: run every benchmark in this folder, one after the other, and print their reports.

Each benchmark runs our code side by side with the peer tool in the same run and prints ratios.
Pass --quick for a short smoke run.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = ["bench_com.py", "bench_rrvae.py", "bench_gui.py", "bench_zernike.py", "bench_scale.py"]


def main(argv: list[str]) -> int:
    failed = []
    for name in BENCHES:
        script = HERE / name
        if not script.exists():
            print(f"== {name}: not present, skipped")
            continue
        print(f"\n== {name}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call([sys.executable, str(script), *argv])
        print(f"== {name}: exit {rc} after {time.perf_counter() - t0:.0f} s", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print("failed:", ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
