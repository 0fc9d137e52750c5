"""A supervised child for tests/test_supervised_children.py, run as
`python -m supervised_child_behaviours BEHAVIOUR` (tests/ on PYTHONPATH).

Behaviours: "echo" answers each message with itself; "print" prints to stdout, then
echoes; "hang" sleeps an hour at its first message (neither reads nor answers);
"exit" exits (status 3) at its first message; "slow start SECONDS" sleeps that long
before it serves as "echo" does (a child still importing its modules); "bytes HEX" writes the bytes HEX into
its reply pipe (not through `serve`) and sleeps an hour; "bytes and exit HEX" writes
them and exits (status 0).
"""

from __future__ import annotations

import os
import sys
import time

from supervision.children import serve


def main(behaviour: str, *args: str) -> None:
    if behaviour in ("bytes", "bytes and exit"):
        os.write(1, bytes.fromhex(args[0]))
        if behaviour == "bytes":
            time.sleep(3600)
    elif behaviour == "slow start":
        time.sleep(float(args[0]))
        serve(lambda message: message)
    elif behaviour == "exit":
        serve(lambda message: os._exit(3))
    elif behaviour == "hang":
        serve(lambda message: time.sleep(3600))
    elif behaviour == "print":
        serve(lambda message: (print("stray text", message), sys.stdout.flush(), message)[-1])
    else:
        serve(lambda message: message)


if __name__ == "__main__":
    main(*sys.argv[1:])
