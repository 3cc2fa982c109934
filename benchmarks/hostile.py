"""Hostile clients against the real daemon: ``python -m benchmarks.hostile``.

Starts a throwaway PostgreSQL and ``twistd dataserv`` with its default limits, then
plays each attacker and prints what it saw as JSON lines (``--json`` writes them all):

- slowloris: connections that send their request head one byte a second;
- big body: a GET that announces and sends a 500 MB body;
- slow readers: 64 clients that ask for /api/online/json and read nothing;
- idle: 1,100 idle connections (from 22 loopback addresses, under the per-IP cap),
  once with the daemon's descriptor limit at 1,024;
- flood: one address sending as fast as it can while another asks now and then.

Loopback only; every source address is in 127.0.0.0/8.
"""

import argparse
import json
import os
import resource
import select
import socket
import statistics
import sys
import threading
import time

from benchmarks import presign, seed
from benchmarks.drivers import best_driver
from benchmarks.run import HOST, Bench, wait_until


def _count_fds(pid, holds):
    """How many of a process's descriptors point at what ``holds(target)`` accepts."""
    count = 0
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            if holds(os.readlink("/proc/%d/fd/%s" % (pid, fd))):
                count += 1
        except OSError:
            pass
    return count


def open_sockets(pid):
    """Sockets a process holds."""
    return _count_fds(pid, lambda target: target.startswith("socket:"))


def spooled_files(pid):
    """Deleted temporary files a process holds open (Twisted spools bodies to them)."""
    return _count_fds(pid, lambda target: target.endswith("(deleted)"))


def connect(port, source=None, rcvbuf=None):
    """A blocking TCP connection to the daemon, optionally from a loopback source."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    if source:
        sock.bind((source, 0))
    sock.settimeout(10)
    sock.connect((HOST, port))
    return sock


def ask(sock, path="/api/total"):
    """Send one keep-alive GET and read the answer; (status, seconds) or (0, seconds)."""
    started = time.monotonic()
    try:
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return 0, time.monotonic() - started
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(next((l.split(b":")[1] for l in head.split(b"\r\n")
                           if l.lower().startswith(b"content-length:")), b"0"))
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        return int(head.split(b" ")[1]), time.monotonic() - started
    except OSError:
        return 0, time.monotonic() - started


def closed(sock):
    """Whether the peer has closed (reads and discards whatever is there)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        while True:
            sock.setblocking(False)
            try:
                chunk = sock.recv(1 << 20)
            except BlockingIOError:
                return False
            finally:
                sock.setblocking(True)
            if not chunk:
                return True
    except OSError:
        return True


class Hostile(Bench):
    """The scenarios; reuses the benchmark's database and daemon plumbing."""

    def daemon(self, *flags, port=None, preexec=None):
        """A daemon with the default limits (and the given flags)."""
        return super().daemon(*flags, port=port, limits=True, preexec=preexec)

    def note(self, row):
        """Keep and print a result."""
        self.rows.append(row)
        print(json.dumps(row), flush=True)

    def slowloris(self, d, count=32):
        """Request heads sent one byte a second: how long until each is dropped."""
        head = b"GET /api/total HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000
        socks = [connect(d.port, source="127.0.0.%d" % (10 + i % 4)) for i in range(count)]
        started = time.monotonic()
        dropped, answers = {}, set()
        sent = 0
        while len(dropped) < count and time.monotonic() - started < 120:
            for i, sock in enumerate(socks):
                if i in dropped:
                    continue
                try:
                    readable, _, _ = select.select([sock], [], [], 0)
                    if readable:
                        data = sock.recv(4096)
                        if data:
                            answers.add(data.split(b"\r\n")[0].decode())
                        sock.close()
                        dropped[i] = time.monotonic() - started
                        continue
                    sock.send(head[sent:sent + 1])
                except OSError:
                    dropped[i] = time.monotonic() - started
            sent += 1
            time.sleep(1)
        for sock in socks:
            sock.close()
        times = sorted(dropped.values())
        self.note({"scenario": "slowloris, %d connections, 1 byte/s" % count,
                   "dropped": len(times), "bytes_sent_each": sent,
                   "seconds_to_drop_min": round(times[0], 1) if times else None,
                   "seconds_to_drop_max": round(times[-1], 1) if times else None,
                   "answers": sorted(answers)})

    def big_body(self, d, size=500_000_000):
        """A GET announcing a 500 MB body and sending it flat out."""
        before = d.rss_mb()
        sock = connect(d.port, source="127.0.0.20")
        sock.sendall(b"GET /api/total HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
        started = time.monotonic()
        chunk = b"x" * 65536
        sent, spooled, answer = 0, 0, b""
        sock.settimeout(5)
        try:
            while sent < size:
                sent += sock.send(chunk)
                spooled = max(spooled, spooled_files(d.process.pid))
                readable, _, _ = select.select([sock], [], [], 0)
                if readable and not answer:
                    answer = sock.recv(4096)
        except OSError:
            pass
        dropped_after = time.monotonic() - started
        if not answer:
            try:
                answer = sock.recv(4096)
            except OSError:
                pass
        sock.close()
        self.note({"scenario": "500 MB body", "status_line": answer.split(b"\r\n")[0].decode(),
                   "bytes_sent_before_cut": sent, "seconds_until_cut": round(dropped_after, 2),
                   "spooled_files": spooled,
                   "rss_mb_before": round(before, 1),
                   "rss_mb_after": round(d.rss_mb(), 1)})

    def slow_readers(self, d, label, count=64, wait=90):
        """Clients that ask for /api/online/json one after another and read nothing."""
        base_rss = d.rss_mb()
        base_sockets = open_sockets(d.process.pid)
        socks = []
        started = time.monotonic()
        for i in range(count):
            sock = connect(d.port, source="127.0.0.%d" % (30 + i // 16), rcvbuf=4096)
            sock.sendall(b"GET /api/online/json HTTP/1.1\r\nHost: x\r\n\r\n")
            socks.append(sock)
            time.sleep(0.25)  # across summary passes: each may pin its own snapshot
        peak, held_until = base_rss, None
        probe = connect(d.port, source="127.0.0.99")
        latencies = []
        while time.monotonic() - started < wait:
            peak = max(peak, d.rss_mb())
            latencies.append(ask(probe)[1])
            if open_sockets(d.process.pid) <= base_sockets + 1 and held_until is None:
                held_until = time.monotonic() - started
                break
            time.sleep(1)
        probe.close()
        for sock in socks:
            sock.close()
        self.note({"scenario": "64 slow readers of /api/online/json, " + label,
                   "rss_mb_before": round(base_rss, 1), "rss_mb_peak": round(peak, 1),
                   "seconds_until_all_dropped": round(held_until, 1) if held_until else
                   "still held after %d s" % wait,
                   "others_p50_ms": round(1000 * statistics.median(latencies), 1),
                   "others_max_ms": round(1000 * max(latencies), 1)})

    def idle(self, d, label, count=1100):
        """Many idle connections: does a kept-alive client and a new one get answers?"""
        kept = connect(d.port, source="127.0.0.100")
        first = ask(kept)[0]
        socks = []
        for i in range(count):
            try:
                socks.append(connect(d.port, source="127.0.0.%d" % (101 + i // 50)))
            except OSError:
                break
        time.sleep(1)
        held = open_sockets(d.process.pid)
        again = [ask(kept)[0] for _ in range(3)]
        fresh = connect(d.port, source="127.0.0.200")
        fresh_status = ask(fresh)[0]
        fresh.close()
        started = time.monotonic()
        wait_until(lambda: open_sockets(d.process.pid) < 20, 60, "idle connections to go")
        idle_dropped = time.monotonic() - started
        after = connect(d.port, source="127.0.0.201")
        after_status = ask(after)[0]
        after.close()
        kept.close()
        for sock in socks:
            sock.close()
        self.note({"scenario": "%d idle connections, %s" % (count, label),
                   "opened": len(socks), "daemon_sockets_held": held,
                   "kept_alive_client": [first] + again, "new_client_meanwhile": fresh_status,
                   "seconds_until_idle_dropped": round(idle_dropped + 1, 1),
                   "new_client_after": after_status})

    def flood(self, d, seconds=8.0):
        """One address as fast as it can; another asks five times a second."""
        raw = presign.raw_get("%s:%d" % (HOST, d.port), "/api/address")
        other = []

        def victim():
            sock = connect(d.port, source="127.0.0.50")
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                other.append(ask(sock, "/api/address"))
                time.sleep(0.2)
            sock.close()

        thread = threading.Thread(target=victim)
        thread.start()
        result = best_driver().run(HOST, d.port, [raw] * 64, 16, seconds)
        thread.join()
        statuses = [s for s, _ in other]
        self.note({"scenario": "flood from one address, 16 connections, %gs" % seconds,
                   "flood_requests": result.requests, "flood_non_2xx": result.non_2xx,
                   "flood_answered_200": result.requests - result.non_2xx,
                   "other_client_answers": {str(s): statuses.count(s) for s in set(statuses)},
                   "other_client_p50_ms": round(1000 * statistics.median(t for _, t in other), 1),
                   "other_client_max_ms": round(1000 * max(t for _, t in other), 1)})


def main(argv=None):
    """Command line entry point."""
    parser = argparse.ArgumentParser(description="dataserv against hostile clients")
    parser.add_argument("--online", type=int, default=100000,
                        help="farmers online (sizes /api/online/json)")
    parser.add_argument("--only", type=lambda v: set(v.split(",")), default=set(),
                        help="slowloris,body,readers,idle,flood (default all)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    wanted = lambda name: not args.only or name in args.only  # noqa: E731
    # The clients need more descriptors than the usual 1,024.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    bench = Hostile(argparse.Namespace(seconds=8.0, repeat=1, connections=16))
    try:
        bench.start_database()
        bench.daemon().stop()  # creates the schema
        now = time.time()
        seed.copy_farmers(bench.dsn, [(f.address, f.address, 1000, now - 3600, now)
                                      for f in presign.farmers(args.online)])
        d = bench.daemon("--summary-interval", "1")
        try:
            if wanted("slowloris"):
                bench.slowloris(d)
            if wanted("body"):
                bench.big_body(d)
            if wanted("readers"):
                bench.slow_readers(d, "default limits (--send-timeout 60)")
            if wanted("idle"):
                bench.idle(d, "default limits")
            if wanted("flood"):
                bench.flood(d)
        finally:
            d.stop()
        if wanted("readers"):
            d = bench.daemon("--summary-interval", "1", "--send-timeout", "0")
            try:
                bench.slow_readers(d, "--send-timeout 0 (as before)", wait=90)
            finally:
                d.stop()
        if wanted("idle"):
            low = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))  # noqa: E731
            d = bench.daemon(preexec=low)
            try:
                bench.idle(d, "daemon limited to 1,024 descriptors")
            finally:
                d.stop()
    finally:
        bench.close()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                       "online": args.online, "rows": bench.rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
