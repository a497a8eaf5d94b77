#!/usr/bin/env python3
"""Benchmark `kiln cache serve` against baselines measured in the same run.

* download throughput of one large blob at 1 and 16 concurrent clients, beside nginx serving
  the same file from disk (Debian's nginx, started here on 127.0.0.1);
* upload throughput, beside `sha512sum` of the same file (the hashing limit);
* p50/p99 latency of small GETs and PUTs (one keep-alive client), beside nginx (GET from disk,
  WebDAV PUT without fsync: a lower bound, not a like-for-like).

Usage: python bench/bench_cache.py [--size 1G] [--small 10000]
Needs: nginx and curl (apt-get install nginx curl).  Prints a table; exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

from kiln.shacache.units import parse_size
from kiln.testing.cache import free_port, start_cache_server

NGINX_CONF = """
daemon off;
user root;
worker_processes auto;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    client_max_body_size 0;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location /put/ {{ dav_methods PUT; create_full_put_path on; }}
    }}
}}
"""


def require(tool: str) -> str:
    path = shutil.which(tool) or (
        f"/usr/sbin/{tool}" if Path(f"/usr/sbin/{tool}").exists() else None
    )
    if not path:
        sys.exit(f"{tool} is missing: apt-get install {tool}")
    return path


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def parallel_curl(url: str, clients: int) -> float:
    """Seconds for `clients` concurrent curl downloads of url to /dev/null."""
    start = time.perf_counter()
    processes = [subprocess.Popen(["curl", "-sf", "-o", "/dev/null", url]) for _ in range(clients)]
    for process in processes:
        if process.wait() != 0:
            raise RuntimeError(f"curl {url} failed")
    return time.perf_counter() - start


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def p50_p99(samples: list[float]) -> str:
    return f"{percentile(samples, 0.5) * 1000:.2f} / {percentile(samples, 0.99) * 1000:.2f}"


async def small_latencies(
    base: str, put_url: Callable[[str], str], count: int, auth: tuple[str, str] | None
) -> tuple[list[float], list[float]]:
    """PUT then GET `count` distinct 4 KiB objects, one at a time on one connection."""
    bodies = [os.urandom(4096) for _ in range(count)]
    names = [hashlib.sha512(body).hexdigest() for body in bodies]
    puts, gets = [], []
    connector = aiohttp.TCPConnector(limit=1)
    headers = {"Authorization": aiohttp.encode_basic_auth(*auth)} if auth else {}
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        for name, body in zip(names, bodies, strict=True):
            start = time.perf_counter()
            async with session.put(put_url(name), data=body) as response:
                await response.read()
                assert response.status in (200, 201, 204), response.status
            puts.append(time.perf_counter() - start)
        for name in names:
            start = time.perf_counter()
            async with session.get(f"{base}/{name}") as response:
                assert len(await response.read()) == 4096
            gets.append(time.perf_counter() - start)
    return puts, gets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1G", help="size of the large blob (default 1G)")
    parser.add_argument("--small", type=int, default=10_000, help="number of 4 KiB objects")
    parser.add_argument("--dir", help="work directory (default: a temp dir, removed after)")
    args = parser.parse_args()
    nginx, _ = require("nginx"), require("curl")
    size = parse_size(args.size)
    work = Path(args.dir or tempfile.mkdtemp(prefix="kiln-bench-"))
    rows: list[tuple[str, str, str, str]] = []
    server = nginx_process = None
    try:
        blob = work / "blob"
        print(f"writing a {size >> 20} MiB random file...", file=sys.stderr)
        with open(blob, "wb") as f:
            for _ in range(size // (16 << 20)):
                f.write(os.urandom(16 << 20))
            f.write(os.urandom(size % (16 << 20)))

        sha_seconds = timed(
            lambda: subprocess.run(["sha512sum", str(blob)], check=True, capture_output=True)
        )
        server = start_cache_server(work / "cache", "--max-size", "64G")
        upload_url = f"{server.upload_url}/shacache"
        upload_seconds = timed(
            lambda: subprocess.run(
                [
                    "curl",
                    "-sf",
                    "-X",
                    "POST",
                    "-T",
                    str(blob),
                    "-H",
                    "Content-Type: application/octet-stream",
                    "-o",
                    "/dev/null",
                    upload_url,
                ],
                check=True,
            )
        )
        digest = hashlib.sha512(blob.read_bytes()).hexdigest() if size <= (2 << 30) else None
        if digest is None:
            digest = subprocess.run(
                ["sha512sum", str(blob)], capture_output=True, text=True, check=True
            ).stdout.split()[0]
        mib = size / (1 << 20)
        rows.append(
            (
                "upload 1 blob",
                f"{mib / upload_seconds:.0f} MiB/s",
                f"sha512sum {mib / sha_seconds:.0f} MiB/s",
                f"{sha_seconds / upload_seconds:.0%}",
            )
        )

        nginx_root = work / "nginx-root"
        (nginx_root / "put").mkdir(parents=True)
        os.link(blob, nginx_root / "blob")
        port = free_port()
        (work / "nginx.conf").write_text(NGINX_CONF.format(prefix=work, port=port, root=nginx_root))
        nginx_process = subprocess.Popen([nginx, "-c", str(work / "nginx.conf"), "-p", str(work)])
        time.sleep(1)
        nginx_url = f"http://127.0.0.1:{port}"
        ours_url = f"{server.url}/shacache/{digest}"
        for clients in (1, 16):
            parallel_curl(ours_url, 1)  # warm the page cache for both
            nginx_seconds = parallel_curl(f"{nginx_url}/blob", clients)
            ours_seconds = parallel_curl(ours_url, clients)
            total = mib * clients
            rows.append(
                (
                    f"download x{clients}",
                    f"{total / ours_seconds:.0f} MiB/s",
                    f"nginx {total / nginx_seconds:.0f} MiB/s",
                    f"{nginx_seconds / ours_seconds:.0%}",
                )
            )

        auth = (server.user, server.password)
        puts, gets = asyncio.run(
            small_latencies(
                f"{server.url}/shacache", lambda n: f"{server.url}/shacache/{n}", args.small, auth
            )
        )
        nginx_puts, nginx_gets = asyncio.run(
            small_latencies(f"{nginx_url}/put", lambda n: f"{nginx_url}/put/{n}", args.small, None)
        )
        for label, ours, base in (("4 KiB PUT", puts, nginx_puts), ("4 KiB GET", gets, nginx_gets)):
            rows.append(
                (
                    f"{label} p50 / p99",
                    f"{p50_p99(ours)} ms",
                    f"nginx {p50_p99(base)} ms",
                    f"mean {statistics.mean(ours) * 1000:.2f} ms",
                )
            )
    finally:
        if nginx_process is not None:
            nginx_process.terminate()
            nginx_process.wait()
        if server is not None:
            server.stop()
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)

    print(
        f"\nkiln cache benchmark ({size >> 20} MiB blob, {args.small} small objects,"
        f" {os.cpu_count()} cores)\n"
    )
    widths = [
        max(len(row[i]) for row in [("test", "kiln", "baseline", "kiln/baseline"), *rows])
        for i in range(4)
    ]
    for row in [("test", "kiln", "baseline", "kiln/baseline"), *rows]:
        print(
            "| "
            + " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            + " |"
        )


if __name__ == "__main__":
    main()
