"""The served version's holder: requests lease the bundle; a swapped-out bundle closes after its last lease."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from whitevec.index.bundle import Bundle


def release_freed_memory() -> None:
    """Collect what a swap or a job left in reference cycles, then hand freed heap pages back to the OS
    (glibc keeps them otherwise). Called after a swap and after each job: rare, and ~0.1 s."""
    gc.collect()
    name = ctypes.util.find_library("c")
    trim = getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    if trim is not None:
        trim(0)


def _close(bundle: Bundle) -> None:
    bundle.close()
    release_freed_memory()


class ServedBundle:
    """Owns the bundle requests are served from. A swap never closes a bundle under a request (or an
    activation's last carry-over pass) that leased it: the old one is closed (index freed, search
    thread stopped, files closed) when its last lease ends, or at once when none is held. Jobs do not
    lease: they read their corpus through connections of their own and check, under the change lock,
    that the version they read is still served before touching it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: Bundle | None = None
        self._leases: dict[int, int] = {}  # id(bundle) -> leases held
        self._retired: dict[int, Bundle] = {}  # swapped out, closed when their leases end

    @property
    def current(self) -> Bundle | None:
        return self._current

    @contextmanager
    def lease(self) -> Iterator[Bundle | None]:
        """The served bundle, kept open until the block ends (None before one is loaded)."""
        with self._lock:
            bundle = self._current
            if bundle is not None:
                self._leases[id(bundle)] = self._leases.get(id(bundle), 0) + 1
        try:
            yield bundle
        finally:
            if bundle is not None:
                self._release(bundle)

    def _release(self, bundle: Bundle) -> None:
        with self._lock:
            left = self._leases[id(bundle)] - 1
            if left:
                self._leases[id(bundle)] = left
                return
            del self._leases[id(bundle)]
            doomed = self._retired.pop(id(bundle), None)
        if doomed is not None:  # the last lease may end on the event loop: freeing an index and trimming the
            # heap take a while there, so they run in a thread of their own
            threading.Thread(target=_close, args=(doomed,), name="whitevec-close", daemon=True).start()

    def swap(self, new: Bundle | None) -> Bundle | None:
        """Serve `new` from now on; the previous bundle is returned (closed, or closing with its last lease)."""
        with self._lock:
            old, self._current = self._current, new
            if old is None or old is new:
                return old
            if self._leases.get(id(old)):
                self._retired[id(old)] = old
                return old
        _close(old)
        return old

    def close(self) -> None:
        """At shutdown: stop serving and close the bundle (at once, or when its last request ends)."""
        self.swap(None)
