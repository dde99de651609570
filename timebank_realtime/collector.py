"""Python's cyclic garbage collector, paused around work that builds many young, acyclic objects.

Parsing a delivery makes tens of thousands of dicts, lists and models that reference counting alone
frees. Left on, the collector runs dozens of times during one large delivery, each time traversing what
the delivery has built so far and whatever else the process holds (every connection's objects), for
nothing: a sixth of a large 2.0 delivery's parse time, and a pause for every socket meanwhile.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic collection inside the block, and the collector as it was after it. Only around
    synchronous code, since it pauses collection for the whole process: no other task runs meanwhile."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
