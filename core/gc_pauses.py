"""Keep Python's cyclic garbage collector from pausing a long-running process for ~0.1 s.

A full (oldest-generation) collection walks every tracked object while holding the GIL. After
its imports the API holds ~200,000 of them (FastAPI, pydantic, SQLAlchemy, Prefect's client) and
one full collection took ~110 ms on an idle core; the warm worker, with the flows imported,
~180,000 and ~90 ms, during which none of its flow runs moves. Under load the collector runs one
every few seconds. Those objects live as long as the process: `gc.freeze()` moves them to a
permanent generation the collector no longer walks. What is created afterwards (requests,
records, flow runs) is collected as before.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger("marketplace.gc")


_frozen = 0  # how many objects this process froze (0: not yet)


def freeze_startup_objects() -> int:
    """Collect once, then freeze what is left (call when start-up is done). Returns how many are frozen.

    Once per process: a second start-up in the same process (tests start the app many times)
    would freeze whatever the first left alive. Remembered here rather than asked of
    `gc.get_freeze_count()`, which walks the whole permanent generation to count it (~70 ms for
    the API's ~226,000 objects: paid again by every app start in the test suite)."""
    global _frozen
    if _frozen:
        return _frozen
    gc.collect()
    gc.freeze()
    _frozen = gc.get_freeze_count()
    log.debug("froze %d start-up objects out of the garbage collector's walks", _frozen)
    return _frozen
