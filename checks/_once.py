"""Build-once caches for compiled validators and policy bundles shared by a worker's threads.

functools.lru_cache does not hold a lock while it computes, so threads that miss at the same
time each compile (the policy bundle takes ~17 ms, a validator a few ms) and all but one result
are thrown away. Here the first caller compiles under a lock and every other caller waits for it.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Hashable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


def built_once(build: Callable[P, R]) -> Callable[P, R]:
    """Cache `build`'s result per positional arguments; concurrent first calls build it once."""
    built: dict[tuple[Hashable, ...], R] = {}
    lock = threading.Lock()

    @functools.wraps(build)
    def cached(*args: P.args, **kwargs: P.kwargs) -> R:
        if kwargs:
            raise TypeError(f"{build.__name__} is cached by positional arguments only")
        try:
            return built[args]
        except KeyError:
            pass
        with lock:
            if args not in built:
                built[args] = build(*args, **kwargs)
            return built[args]

    return cached
