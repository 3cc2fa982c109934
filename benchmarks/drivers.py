"""Load drivers: wrk replaying pre-signed requests, or a pure-Python asyncio fallback.

Both open one TCP connection per request, keep ``connections`` requests in flight,
and report every request's latency (no coordinated-omission correction).
"""

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass

LUA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "replay.lua")


@dataclass
class Result:
    """What one load run measured."""

    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    non_2xx: int
    socket_errors: int
    driver: str
    runs: list = None  # every run's rate when this result is the median of several

    def as_dict(self):
        """Plain dict for the JSON report."""
        return asdict(self)


def _split(requests, parts):
    return [requests[i::parts] for i in range(parts)]


class WrkDriver:
    """wrk (Debian package ``wrk``) with a Lua script that replays request files."""

    name = "wrk"

    def __init__(self, threads=2):
        self.threads = threads

    @staticmethod
    def available():
        """Whether wrk is on PATH."""
        return shutil.which("wrk") is not None

    def run(self, host, port, requests, connections=16, seconds=8.0):
        """Replay ``requests`` (raw bytes) for ``seconds``."""
        threads = max(1, min(self.threads, connections))
        with tempfile.TemporaryDirectory(prefix="dataserv-bench-") as tmp:
            prefix = os.path.join(tmp, "requests")
            for i, chunk in enumerate(_split(requests, threads)):
                with open("%s.%d" % (prefix, i), "wb") as f:
                    f.write(b"\0".join(chunk))
            out = subprocess.run(
                ["wrk", "-t%d" % threads, "-c%d" % connections, "-d%ds" % max(1, round(seconds)),
                 "--timeout", "10s", "-s", LUA, "http://%s:%d/" % (host, port), "--", prefix],
                capture_output=True, text=True, timeout=seconds + 120)
        line = [l for l in out.stdout.splitlines() if l.startswith("WRKJSON ")]
        if not line:
            raise RuntimeError("wrk gave no result: %s %s" % (out.stdout, out.stderr))
        data = json.loads(line[-1][len("WRKJSON "):])
        elapsed = data["duration_us"] / 1e6
        # wrk counts a peer closing the connection after the response as a read
        # error only when no response came; with Connection: close that is a real error.
        errors = data["connect"] + data["read"] + data["write"] + data["timeout"]
        return Result(
            requests=data["requests"], seconds=elapsed,
            rps=data["requests"] / elapsed if elapsed else 0.0,
            p50_ms=data["p50_us"] / 1000, p99_ms=data["p99_us"] / 1000,
            max_ms=data["max_us"] / 1000, non_2xx=data["status"], socket_errors=errors,
            driver=self.name)


class AsyncioDriver:
    """Pure-Python fallback; its own ceiling is lower than wrk's (reported as such)."""

    name = "asyncio"

    @staticmethod
    def available():
        """Always."""
        return True

    def run(self, host, port, requests, connections=16, seconds=8.0):
        """Replay ``requests`` for ``seconds`` with ``connections`` in flight."""
        return asyncio.run(self._run(host, port, requests, connections, seconds))

    async def _one(self, host, port, raw):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(raw)
            await writer.drain()
            status_line = await reader.readline()
            await reader.read()  # until the server closes (Connection: close)
        finally:
            writer.close()
        parts = status_line.split()
        return int(parts[1]) if len(parts) > 1 else 0

    async def _run(self, host, port, requests, connections, seconds):
        latencies, statuses = [], {"non_2xx": 0, "errors": 0}
        deadline = time.perf_counter() + seconds
        position = [0]

        async def worker():
            while time.perf_counter() < deadline:
                raw = requests[position[0] % len(requests)]
                position[0] += 1
                started = time.perf_counter()
                try:
                    status = await self._one(host, port, raw)
                except OSError:
                    statuses["errors"] += 1
                    continue
                latencies.append(time.perf_counter() - started)
                if not 200 <= status < 300:
                    statuses["non_2xx"] += 1

        started = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(connections)])
        elapsed = time.perf_counter() - started
        latencies.sort()

        def pct(p):
            return latencies[min(len(latencies) - 1, int(len(latencies) * p))] * 1000 if latencies else 0.0

        return Result(
            requests=len(latencies), seconds=elapsed, rps=len(latencies) / elapsed,
            p50_ms=pct(0.50), p99_ms=pct(0.99), max_ms=pct(1.0) if latencies else 0.0,
            non_2xx=statuses["non_2xx"], socket_errors=statuses["errors"], driver=self.name)


def best_driver():
    """wrk when installed, else the asyncio fallback."""
    return WrkDriver() if WrkDriver.available() else AsyncioDriver()
