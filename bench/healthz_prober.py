"""A /healthz prober in a process of its own (bench/abuse.py starts it).

    python bench/healthz_prober.py HOST PORT [INTERVAL_MS]

Probes `GET /healthz` on a fixed schedule, one probe due every INTERVAL_MS
milliseconds (default 10), over one keep-alive connection (a new one after a
failure), from the moment it starts until its standard input closes, and
writes one line per probe to standard output: `<seconds> <status>`, the
probe's latency and HTTP status, or `- error` for a probe that got no answer
at all (connection refused or reset, 60 s without a reply). The caller starts
its load once the first line came; the probe in flight when standard input
closes is finished and written.

Latency is counted from the probe's *scheduled* time to its body read, not
from its send: a probe that could not be sent on time, because the one
before it was still waiting for the server, counts that wait too. This is
what a load balancer probing on its own schedule sees (the correction for
"coordinated omission"). Probed back to back and timed from the send, as
this prober did before, a server stalled 50% of the time gives a p99 of a
few ms: one slow probe per stall against hundreds of fast ones in between
(a toy server stalling 100 ms every 200 ms: p99 4.1 ms back to back, 99.9 ms
on a 10 ms schedule; the reviewer's run of 2026-11-30 on a loaded machine).
Two consequences: the prober's own scheduling delay on a loaded machine is
counted as latency too (an upper bound there), and if /healthz itself takes
longer than INTERVAL_MS the backlog grows (then raise INTERVAL_MS).

Why a process of its own: a load balancer's health check comes from another
host, not from the client that sends the load. Probed from the benchmark's own
event loop, each probe also waited while that loop parsed the 8 large answers
(pure-Python HTTP parsing of up to 200 KB each) and sampled /proc: in one run
of `cost_lots_parents_parents` and `entities_at_cap` on a quiet machine, the in-loop
probe's p99 was 92.6 and 85.8 ms, and this prober's (then back to back), running
alongside it, 67.6 and 67.3 ms (docs/performance.md, "Abuse", 2026-11-30 12:50 UTC).
Standard library only, so that it starts in tens of milliseconds and shares
nothing with the benchmark's process.
"""

from __future__ import annotations

import http.client
import sys
import threading
import time

DEFAULT_INTERVAL_MS = 10.0


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    interval = float(sys.argv[3] if len(sys.argv) > 3 else DEFAULT_INTERVAL_MS) / 1000
    stop = threading.Event()

    def wait_for_eof() -> None:
        sys.stdin.buffer.read()
        stop.set()

    threading.Thread(target=wait_for_eof, daemon=True).start()
    out = sys.stdout
    connection = http.client.HTTPConnection(host, port, timeout=60)
    due = time.perf_counter()
    while not stop.is_set():
        stop.wait(max(0.0, due - time.perf_counter()))  # until this probe is due (or the end)
        if stop.is_set():
            break
        try:
            connection.request("GET", "/healthz")
            response = connection.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            out.write("- error\n")
            out.flush()
            connection.close()
            connection = http.client.HTTPConnection(host, port, timeout=60)
            due = max(due + interval, time.perf_counter())  # the failure's wait is not a latency
            continue
        out.write(f"{time.perf_counter() - due:.6f} {response.status}\n")
        out.flush()
        due += interval
    connection.close()


if __name__ == "__main__":
    main()
