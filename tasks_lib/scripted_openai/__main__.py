"""Run the scripted OpenAI Responses API server as a process.

    python -m tasks_lib.scripted_openai --port 0 --port-file /tmp/x/port [--log-file F.jsonl]
        [--scenarios-file extra.json]
    python -m tasks_lib.scripted_openai --list-scenarios

Prints ``specwave-scripted-openai listening on http://127.0.0.1:PORT`` (one line, flushed),
writes the port to ``--port-file`` atomically, and serves until SIGTERM/SIGINT. Point the
Codex CLI at ``http://127.0.0.1:PORT/v1`` (the codex agent's ``base_url``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading

from .scenarios import merged_scenarios
from .server import ScriptedOpenAIServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tasks_lib.scripted_openai",
        description="Scripted OpenAI Responses API on 127.0.0.1 (for offline Codex CLI runs).",
    )
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: a free one)")
    parser.add_argument("--port-file", help="write the bound port number to this file")
    parser.add_argument("--log-file", help="append every request record as a JSON line")
    parser.add_argument(
        "--scenarios-file", help="JSON object of extra scenarios, merged over the built-in ones"
    )
    parser.add_argument(
        "--list-scenarios", action="store_true", help="print scenario names and exit"
    )
    args = parser.parse_args(argv)

    extra = None
    if args.scenarios_file:
        with open(args.scenarios_file, encoding="utf-8") as fh:
            extra = json.load(fh)
    if args.list_scenarios:
        for name, scenario in sorted(merged_scenarios(extra).items()):
            print(f"{name}: {scenario.get('description', '')}")
        return 0
    srv = ScriptedOpenAIServer(extra, port=args.port, log_file=args.log_file).start()
    done = threading.Event()

    def _quit(signum: int, frame: object) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _quit)
    signal.signal(signal.SIGINT, _quit)
    if args.port_file:
        tmp = f"{args.port_file}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(f"{srv.port}\n")
        os.replace(tmp, args.port_file)
    print(f"specwave-scripted-openai listening on {srv.base_url}", flush=True)
    try:
        while not done.wait(0.5):
            pass
    finally:
        srv.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
