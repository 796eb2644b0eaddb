"""Benchmark-only HTTP counter, loaded by Python at start-up when this folder is on PYTHONPATH.

When ``SPECWAVE_BENCH_HTTP_LOG`` names a file prefix, every request sent by an httpx client
(Prefect's API clients) is counted by method, route and status — retries included, since
Prefect's client re-sends through the same ``send`` — and the counts are written to
``<prefix>.<pid>.json`` at exit. Nothing happens without the variable.
"""

import os

_PREFIX = os.environ.get("SPECWAVE_BENCH_HTTP_LOG")

if _PREFIX:
    import atexit
    import collections
    import json
    import re
    import threading
    import time

    _counts: collections.Counter = collections.Counter()
    _first: dict = {}
    _lock = threading.Lock()
    _ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

    def _note(request, status):
        key = f"{request.method} {_ID.sub('{id}', request.url.path)} {status}"
        with _lock:
            _counts[key] += 1
            _first.setdefault(key, time.time())

    def _dump():
        with open(f"{_PREFIX}.{os.getpid()}.json", "w") as fh:
            json.dump({"counts": dict(_counts), "first": _first}, fh)

    atexit.register(_dump)

    try:
        import httpx

        _async_send = httpx.AsyncClient.send
        _sync_send = httpx.Client.send

        async def _asend(self, request, *args, **kwargs):
            try:
                response = await _async_send(self, request, *args, **kwargs)
            except Exception as exc:
                _note(request, type(exc).__name__)
                raise
            _note(request, response.status_code)
            return response

        def _ssend(self, request, *args, **kwargs):
            try:
                response = _sync_send(self, request, *args, **kwargs)
            except Exception as exc:
                _note(request, type(exc).__name__)
                raise
            _note(request, response.status_code)
            return response

        httpx.AsyncClient.send = _asend
        httpx.Client.send = _ssend
    except ImportError:
        pass

# What-if experiments on the engine, without editing it: SPECWAVE_BENCH_POLL_S sets
# tasks_lib.agents.proctable.POLL_S (how often an exit is polled where no pidfd is usable).
_POLL = os.environ.get("SPECWAVE_BENCH_POLL_S")
if _POLL:
    try:
        import tasks_lib.agents.proctable as _proctable

        _proctable.POLL_S = float(_POLL)
    except ImportError:
        pass
