"""Keep the cyclic garbage collector's full passes short in a long-running worker.

A worker holds long-lived state in Python objects (the session-model replica, rule rows, caches).
CPython's full (generation 2) collection walks every tracked object, so its pause grows with that
state: 40-110 ms a pass on a warmed-up worker, every few seconds under load, which lands straight
in the latency tail of the events waiting behind it. Objects that survived a full collection are
almost all that long-lived state, so after each full pass they are moved out of the collector's
reach (:func:`gc.freeze`); the next full pass walks only what was allocated since.

The cost: a reference cycle made of frozen objects is not reclaimed while the worker runs. The
worker's long-lived structures hold no cycles (they are freed by reference counting when dropped);
what can be caught is a cycle that happened to be alive at a full pass (an exception with its
traceback while Redis is down, say), a bounded amount. The 10M-event replay of
docs/performance.md shows the worker's RSS levelling off. When the worker stops, everything is
unfrozen again.

>>> import gc
>>> undo = freeze_after_full_collections()
>>> _ = gc.collect()  # a full pass: what survives it is frozen
>>> gc.get_freeze_count() > 0
True
>>> undo()  # and unfreezes
>>> gc.get_freeze_count()
0
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any


def freeze_after_full_collections() -> Callable[[], None]:
    """Freeze the survivors of every full collection from now on; returns a function that stops
    it and unfreezes everything (for a worker run inside a longer-lived process: tests, eval)."""

    def on_collection(phase: str, info: dict[str, Any]) -> None:
        if phase == "stop" and info.get("generation") == 2:
            gc.freeze()

    gc.callbacks.append(on_collection)

    def undo() -> None:
        if on_collection in gc.callbacks:
            gc.callbacks.remove(on_collection)
            gc.unfreeze()

    return undo
