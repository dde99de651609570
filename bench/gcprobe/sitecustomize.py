"""Bench-only: times every garbage collection of a Python server the benchmarks start with this
directory on PYTHONPATH and GC_PROBE set to a file. At exit, the file gets one JSON list per
collection: [generation, monotonic start, wall seconds, thread CPU seconds]. CPU time tells a
collection's own work from the time the process spent preempted in the middle of it."""

import atexit
import gc
import json
import os
import time

_path = os.environ.get("GC_PROBE")
if _path:
    _records: list[tuple[int, float, float, float]] = []
    _started = [0.0, 0.0]

    def _time(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            _started[:] = time.monotonic(), time.thread_time()
        else:
            _records.append((info["generation"], _started[0], time.monotonic() - _started[0],
                             time.thread_time() - _started[1]))

    def _write() -> None:
        with open(_path, "w") as file:
            json.dump(_records, file)

    gc.callbacks.append(_time)
    atexit.register(_write)
