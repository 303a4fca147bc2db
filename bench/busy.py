"""`cbir index` on a machine another job keeps busy: how much speed each runtime and thread layout keeps.

Issue 17, item 5: on this 2-core machine torch eager fell to 2-26 % of its quiet speed when another process
kept one core busy, while OpenVINO kept ~46 %. A job has to degrade gracefully when it shares the machine.

Each run is the real command (`cbir index DIR --no-copy` into a fresh data directory, a child process, so
the figure is the job's own "img/s" line: files on disk to rows and vectors, model start-up excluded) with
CBIR_RUNTIME, CBIR_WORKERS (decode processes) and CBIR_INFERENCE_THREADS (intra-op threads) set. The same
run is made quiet and beside --hogs processes that each spin one core, the two alternating round by round
(a noisy spell of the shared machine hits both alike); medians are kept, and "kept" is busy / quiet.

    python bench/busy.py [--dir DIR] [--limit 300] [--rounds 2] [--hogs 1]
                         [--runtimes torch,auto] [--layouts 2x2,1x2,2x1]   # threads x workers

Ends with one JSON line
{"rows": [{"runtime", "threads", "workers", "quiet_img_s", "busy_img_s", "kept"}], ...}.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COREL = ROOT.parent / "shared" / "datasets" / "corel1k"
RATE = re.compile(r"([\d,]+\.\d) img/s;")
SPIN = "while True:\n    pass\n"


def sample(source: Path, limit: int, target: Path) -> Path:
    """The first `limit` files of every class in turn, linked into one folder (same files every run)."""
    classes = sorted(p for p in source.iterdir() if p.is_dir())
    files = [sorted(c.iterdir()) for c in classes]
    picked = [f for group in zip(*files, strict=False) for f in group][:limit]
    target.mkdir()
    for path in picked:
        (target / f"{path.parent.name}-{path.name}").symlink_to(path)
    return target


@contextlib.contextmanager
def hogs(count: int) -> Iterator[None]:
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(count)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def index_rate(files: Path, runtime: str, threads: int, workers: int, cache: Path) -> float:
    data = Path(tempfile.mkdtemp(prefix="cbir-busy-"))
    env = os.environ | {
        "CBIR_RUNTIME": runtime,
        "CBIR_WORKERS": str(workers),
        "CBIR_INFERENCE_THREADS": str(threads),
        "CBIR_RUNTIME_CACHE": str(cache),
        "CBIR_DATA_DIR": str(data),
    }
    try:
        done = subprocess.run(
            [sys.executable, "-m", "app.cli", "index", str(files), "--no-copy"],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
        )
        found = RATE.search(done.stdout)
        if done.returncode != 0 or found is None:
            raise SystemExit(
                f"cbir index failed ({runtime}, {threads}x{workers}):\n{done.stdout}\n{done.stderr}"
            )
        return float(found.group(1).replace(",", ""))
    finally:
        shutil.rmtree(data, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dir", type=Path, default=COREL)
    parser.add_argument("--limit", type=int, default=300, help="files indexed per run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--hogs", type=int, default=1, help="processes spinning a core in the busy runs")
    parser.add_argument("--runtimes", default="torch,auto")
    parser.add_argument("--layouts", default="2x2,1x2,2x1", help="intra-op threads x decode workers")
    args = parser.parse_args()
    layouts = [tuple(int(n) for n in layout.split("x")) for layout in args.layouts.split(",")]
    runs = [(rt, t, w) for rt in args.runtimes.split(",") for t, w in layouts]
    rates: dict[tuple[str, int, int], dict[str, list[float]]] = {r: {"quiet": [], "busy": []} for r in runs}
    with tempfile.TemporaryDirectory(prefix="cbir-busy-files-") as tmp:
        files = sample(args.dir, args.limit, Path(tmp) / "files")
        cache = Path(tmp) / "runtime-cache"
        for run in runs:  # converts each runtime's model once, so no timed run pays for it
            index_rate(files, *run, cache=cache)
        for round_ in range(args.rounds):
            states = ("quiet", "busy") if round_ % 2 == 0 else ("busy", "quiet")
            for run in runs:
                for state in states:
                    with hogs(args.hogs if state == "busy" else 0):
                        rates[run][state].append(index_rate(files, *run, cache=cache))
                print(f"round {round_ + 1}: {run}: {rates[run]}", flush=True)
    rows = []
    for (runtime, threads, workers), got in rates.items():
        quiet, busy = statistics.median(got["quiet"]), statistics.median(got["busy"])
        rows.append(
            {
                "runtime": runtime,
                "threads": threads,
                "workers": workers,
                "quiet_img_s": round(quiet, 1),
                "busy_img_s": round(busy, 1),
                "kept": round(busy / quiet, 3),
            }
        )
    print(f"{args.limit} files per run, {args.hogs} spinning process(es) when busy, {os.cpu_count()} cores")
    print("runtime | threads x workers | quiet img/s | busy img/s | kept")
    for row in rows:
        print(
            f"{row['runtime']} | {row['threads']}x{row['workers']} | {row['quiet_img_s']} | "
            f"{row['busy_img_s']} | {row['kept']}"
        )
    load = round(os.getloadavg()[0], 1)
    print(json.dumps({"rows": rows, "files": args.limit, "hogs": args.hogs, "load_average": load}))


if __name__ == "__main__":
    main()
