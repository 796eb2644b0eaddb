"""A stand-in coding agent for process-runner tests: runs a list of actions in order.

Usage: fake_agent.py --tag TAG ACTION [ARG] ACTION [ARG] ...

The tag is only there so a test can find every process of its own in ``ps`` (it is in
argv of every process started here; the tests also put it in the environment).

Actions:
  lines N            N lines "out I" on stdout and "err I" on stderr, interleaved
  sleep S            sleep S seconds
  exit C             exit with code C
  ignore-term        ignore SIGTERM from now on (inherited by children started later)
  child              start a child in the same process group that sleeps 120 s
  setsid-child       start a child that calls os.setsid() (escapes the group), sleeps 120 s
  scrubbed-child     like setsid-child, but with an empty environment (no marker)
  daemon             double-fork a daemon (setsid, stdio to /dev/null) that sleeps 120 s
  big-stdout MB      write MB megabytes to stdout in 100-byte lines
  big-stderr MB      the same on stderr
  long-line BYTES    one line of BYTES "x" on stdout without a trailing newline
  garbage            invalid utf-8 on stdout and stderr
  echo-stdin         copy stdin to stdout
  session            print "SESSION pid pgid sid"
Each started process prints "PID <kind> <pid>" on stdout (flushed) before doing anything.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

HERE = os.path.abspath(__file__)


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def sleeper(tag: str, kind: str) -> list[str]:
    return [sys.executable, HERE, "--tag", tag, "announce", kind, "sleep", "120"]


def main(argv: list[str]) -> int:
    assert argv[0] == "--tag", "first argument must be --tag TAG"
    tag = argv[1]
    actions = argv[2:]
    i = 0

    def arg() -> str:
        nonlocal i
        i += 1
        return actions[i]

    while i < len(actions):
        act = actions[i]
        if act == "announce":
            say(f"PID {arg()} {os.getpid()}")
        elif act == "lines":
            for n in range(int(arg())):
                sys.stdout.write(f"out {n}\n")
                sys.stdout.flush()
                sys.stderr.write(f"err {n}\n")
                sys.stderr.flush()
        elif act == "sleep":
            time.sleep(float(arg()))
        elif act == "exit":
            return int(arg())
        elif act == "ignore-term":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        elif act == "child":
            subprocess.Popen(sleeper(tag, "child"))
        elif act == "setsid-child":
            subprocess.Popen(sleeper(tag, "setsid-child"), start_new_session=True)
        elif act == "scrubbed-child":
            subprocess.Popen(sleeper(tag, "scrubbed-child"), start_new_session=True, env={})
        elif act == "daemon":
            if os.fork() == 0:
                os.setsid()
                if os.fork() == 0:
                    say(f"PID daemon {os.getpid()}")
                    null = os.open(os.devnull, os.O_RDWR)
                    for fd in (0, 1, 2):
                        os.dup2(null, fd)
                    time.sleep(120)
                os._exit(0)
            os.wait()
        elif act in ("big-stdout", "big-stderr"):
            stream = sys.stdout.buffer if act == "big-stdout" else sys.stderr.buffer
            line = b"y" * 99 + b"\n"
            for _ in range(int(float(arg()) * 1024 * 1024) // 100):
                stream.write(line)
            stream.flush()
        elif act == "long-line":
            sys.stdout.buffer.write(b"x" * int(arg()))
            sys.stdout.buffer.flush()
        elif act == "garbage":
            sys.stdout.buffer.write(b"ok \xff\xfe bad \xc3(\n")
            sys.stdout.buffer.flush()
            sys.stderr.buffer.write(b"\x80\x81\n")
            sys.stderr.buffer.flush()
        elif act == "echo-stdin":
            sys.stdout.buffer.write(sys.stdin.buffer.read())
            sys.stdout.buffer.flush()
        elif act == "session":
            say(f"SESSION {os.getpid()} {os.getpgrp()} {os.getsid(0)}")
        else:
            raise SystemExit(f"fake_agent: unknown action {act!r}")
        i += 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
