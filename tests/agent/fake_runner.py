"""Stands in for the trial runner (``python -m stalwart.exec.run``) in the agent's tests.

It does only what a test asks through its options: record its environment, print lines, ignore
SIGTERM, leave a child behind, exit with a code. Like the real runner it writes its exit code to
``$STALWART_EXIT_FILE`` when it exits by itself (not when a signal kills it).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType


def write_exit_file(code: int) -> None:
    target = os.environ.get("STALWART_EXIT_FILE")
    if target:
        Path(f"{target}.tmp").write_text(f"{code}\n")
        os.replace(f"{target}.tmp", target)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dump-env", type=Path)
    parser.add_argument("--pidfile", type=Path)
    parser.add_argument("--child-pidfile", type=Path, help="start a child that ignores SIGTERM and sleeps")
    parser.add_argument(
        "--child-own-group", action="store_true", help="as the real runner starts its entrypoint"
    )
    parser.add_argument("--ignore-term", action="store_true")
    parser.add_argument("--term-exit", type=int, help="on SIGTERM, exit with this code")
    parser.add_argument("--stdout-lines", type=int, default=0)
    parser.add_argument("--stderr-lines", type=int, default=0)
    parser.add_argument("--ticks", type=int, default=0, help="print 'tick N' this many times")
    parser.add_argument("--tick-every", type=float, default=0.05)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--exit", type=int, default=0)
    args = parser.parse_args()

    if args.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if args.term_exit is not None:

        def on_term(signum: int, frame: FrameType | None) -> None:
            write_exit_file(args.term_exit)
            sys.exit(args.term_exit)

        signal.signal(signal.SIGTERM, on_term)
    if args.dump_env:
        args.dump_env.write_text(json.dumps({"env": dict(os.environ), "cwd": os.getcwd()}))
    if args.child_pidfile:
        child = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)",
            ],
            process_group=0 if args.child_own_group else None,
        )
        args.child_pidfile.write_text(str(child.pid))
    for i in range(args.stdout_lines):
        print(f"out {i}")
    for i in range(args.stderr_lines):
        print(f"err {i}", file=sys.stderr)
    sys.stdout.flush()
    if args.pidfile:
        # Written last: once it exists, the handlers and the child are in place.
        args.pidfile.write_text(str(os.getpid()))
    for i in range(args.ticks):
        print(f"tick {i}", flush=True)
        time.sleep(args.tick_every)
    time.sleep(args.sleep)
    write_exit_file(args.exit)
    sys.exit(args.exit)


if __name__ == "__main__":
    main()
