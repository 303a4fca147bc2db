"""A bounded load test on loopback: many clients searching and uploading at once against a real server.

Starts `cbir serve` (the embedded default encoder) on a free port with a fresh data directory holding
`--images` Corel photos, measures the unloaded search latency with one client, then runs `--clients`
concurrent clients for `--seconds` (a mix of searches and uploads of new images) and prints requests/s,
p50/p99 latency by kind, and status counts. 503s are the deliberate answer of a full inference queue
(admission control); any other 5xx is a failure. Ends with one line of JSON.

    python bench/load.py [--clients 32] [--seconds 60] [--upload-share 0.1] [--max-queue N] [--client-nice 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
COREL = ROOT.parent / "shared" / "datasets" / "corel1k"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def photos() -> list[Path]:
    return sorted(p for p in COREL.rglob("*.jpg"))


def start_server(
    data_dir: Path, port: int, env_extra: dict[str, str], images: int
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "CBIR_DATA_DIR": str(data_dir), "CBIR_LOG_LEVEL": "warning", **env_extra}
    seed = data_dir.parent / "seed"
    seed.mkdir()
    for photo in photos()[:: max(1, 1000 // images)][:images]:
        (seed / photo.name).symlink_to(photo)
    cli = [sys.executable, "-m", "app.cli"]
    subprocess.run([*cli, "index", str(seed)], env=env, check=True, capture_output=True, cwd=ROOT)
    server = subprocess.Popen(
        [*cli, "serve", "--port", str(port)], env=env, cwd=ROOT, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("the server did not become healthy within 120 s")


Result = tuple[str, int, float, float]  # kind, status, milliseconds, Retry-After seconds (0 if none)


def result(kind: str, response: httpx.Response, started: float) -> Result:
    retry_after = float(response.headers.get("retry-after", 0) or 0)
    return kind, response.status_code, (time.perf_counter() - started) * 1000, retry_after


async def one_search(client: httpx.AsyncClient, data: bytes) -> Result:
    started = time.perf_counter()
    response = await client.post("/search", files={"file": ("q.jpg", data)}, data={"k": "10"})
    return result("search", response, started)


async def one_upload(client: httpx.AsyncClient, data: bytes, tag: str) -> Result:
    started = time.perf_counter()
    # Bytes after the JPEG end marker: the same picture, new content, so a real insert each time.
    response = await client.post("/images", files={"file": (f"{tag}.jpg", data + tag.encode())})
    return result("upload", response, started)


def cpu_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine since boot, from /proc/stat (Linux)."""
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


async def unloaded(base: str, queries: list[bytes], count: int) -> list[float]:
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        for query in queries[:10]:  # warm-up: first forward passes allocate, the first requests connect
            await one_search(client, query)
        return [(await one_search(client, queries[i % len(queries)]))[2] for i in range(count)]


async def loaded(
    base: str, queries: list[bytes], clients: int, seconds: float, upload_share: float
) -> tuple[list[Result], float]:
    results: list[Result] = []
    stop = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def worker(number: int, client: httpx.AsyncClient) -> None:
        rng = random.Random(number)
        sent = 0
        while time.monotonic() < stop:
            data = queries[rng.randrange(len(queries))]
            if rng.random() < upload_share:
                result = await one_upload(client, data, f"load-{number}-{sent}")
            else:
                result = await one_search(client, data)
            results.append(result)
            sent += 1
            if result[1] == 503:
                # As HTTP asks: come back after Retry-After, with jitter so that clients turned away
                # together do not all return in the same instant.
                await asyncio.sleep(result[3] * rng.uniform(0.5, 1.5))

    started = time.monotonic()
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:
        await asyncio.gather(*(worker(i, client) for i in range(clients)))
    return results, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--upload-share", type=float, default=0.1)
    parser.add_argument("--images", type=int, default=200, help="collection size before the load")
    parser.add_argument("--max-queue", type=int, default=None, help="CBIR_MAX_QUEUE (default: the service's)")
    parser.add_argument(
        "--client-nice",
        type=int,
        default=0,
        help="run the clients at this niceness (the server keeps 0): on a small machine, clients that would "
        "be elsewhere in production then take the cores the server leaves, instead of competing for them",
    )
    args = parser.parse_args()

    env_extra = {"CBIR_DEVICE": "cpu"}
    if args.max_queue is not None:
        env_extra["CBIR_MAX_QUEUE"] = str(args.max_queue)
    queries = [p.read_bytes() for p in photos()[1::50]]
    with tempfile.TemporaryDirectory(prefix="cbir-load-") as tmp:
        port = free_port()
        server = start_server(Path(tmp) / "data", port, env_extra, args.images)
        base = f"http://127.0.0.1:{port}"
        if args.client_nice:
            os.nice(args.client_nice)  # this process only: the server was started before
        try:
            quiet = asyncio.run(unloaded(base, queries, 100))
            busy_before, total_before = cpu_busy()
            results, elapsed = asyncio.run(
                loaded(base, queries, args.clients, args.seconds, args.upload_share)
            )
            busy_after, total_after = cpu_busy()
            stats = httpx.get(f"{base}/stats").json()
        finally:
            server.terminate()
            server.wait(60)

    cpu = (busy_after - busy_before) / max(total_after - total_before, 1.0)
    statuses = Counter(status for _, status, _, _ in results)
    ok_search = [ms for kind, status, ms, _ in results if kind == "search" and status == 200]
    ok_upload = [ms for kind, status, ms, _ in results if kind == "upload" and status in (200, 201)]
    errors_5xx = sum(count for status, count in statuses.items() if status >= 500 and status != 503)
    unloaded_p50 = percentile(quiet, 50)
    p50, p99 = percentile(ok_search, 50), percentile(ok_search, 99)
    print(f"collection: {stats['count']} images at the end; {args.clients} clients for {args.seconds:g} s")
    print(f"unloaded search  : p50 {unloaded_p50:7.1f} ms  p99 {percentile(quiet, 99):7.1f} ms")
    print(f"loaded search    : p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  ({len(ok_search)} answered)")
    print(
        f"loaded upload    : p50 {percentile(ok_upload, 50):7.1f} ms  p99 {percentile(ok_upload, 99):7.1f} ms"
    )
    answered = len(ok_search) + len(ok_upload)
    print(f"throughput       : {len(results) / elapsed:7.1f} requests/s, answered {answered}")
    print(f"statuses         : {dict(sorted(statuses.items()))}")
    print(f"CPU busy         : {cpu:.0%} of {os.cpu_count()} cores, server and clients together")
    print(f"p99 / unloaded p50: {p99 / unloaded_p50:.2f}")
    print(
        json.dumps(
            {
                "clients": args.clients,
                "client_nice": args.client_nice,
                "seconds": args.seconds,
                "rps": round(len(results) / elapsed, 1),
                "answered_rps": round(answered / elapsed, 1),
                "p50_ms": round(p50, 1),
                "p99_ms": round(p99, 1),
                "unloaded_p50_ms": round(unloaded_p50, 1),
                "p99_over_unloaded_p50": round(p99 / unloaded_p50, 2),
                "errors_5xx": errors_5xx,
                "status_503": statuses.get(503, 0),
                "statuses": {str(k): v for k, v in sorted(statuses.items())},
                "cpu_busy": round(cpu, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
