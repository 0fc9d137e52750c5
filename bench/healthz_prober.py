"""A /healthz prober in a process of its own (bench/abuse.py starts it).

    python bench/healthz_prober.py HOST PORT

Sends `GET /healthz` back to back over one keep-alive connection (a new one
after a failure) from the moment it starts until its standard input closes,
and writes one line per probe to standard output: `<seconds> <status>`, the
probe's wall time (request sent to body read) and HTTP status, or
`- error` for a probe that got no answer at all (connection refused or reset,
60 s without a reply). The caller starts its load once the first line came.

Why a process of its own: a load balancer's health check comes from another
host, not from the client that sends the load. Probed from the benchmark's own
event loop, each probe also waited while that loop parsed the 8 large answers
(pure-Python HTTP parsing of up to 200 KB each) and sampled /proc: in one run
of `cost_lots_parents_parents` and `entities_at_cap` on a quiet machine, the in-loop
probe's p99 was 92.6 and 85.8 ms, and this prober's, running alongside it, 67.6
and 67.3 ms (docs/performance.md, "Abuse", 2026-11-30 12:50 UTC).
Standard library only, so that it starts in tens of milliseconds and shares
nothing with the benchmark's process.
"""

from __future__ import annotations

import http.client
import sys
import threading
import time


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    stop = threading.Event()

    def wait_for_eof() -> None:
        sys.stdin.buffer.read()
        stop.set()

    threading.Thread(target=wait_for_eof, daemon=True).start()
    out = sys.stdout
    connection = http.client.HTTPConnection(host, port, timeout=60)
    while not stop.is_set():
        started = time.perf_counter()
        try:
            connection.request("GET", "/healthz")
            response = connection.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            out.write("- error\n")
            out.flush()
            connection.close()
            connection = http.client.HTTPConnection(host, port, timeout=60)
            time.sleep(0.01)
            continue
        out.write(f"{time.perf_counter() - started:.6f} {response.status}\n")
        out.flush()
    connection.close()


if __name__ == "__main__":
    main()
