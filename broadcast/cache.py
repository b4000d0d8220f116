"""Serialised playlists kept in the API process, so that a pull that finds nothing new costs no
query instead of the playlist's join and its serialisation.

A cached body is used only while the data it was made from is unchanged: its key holds the
broadcast data's version (broadcast.playlist.broadcast_version) and the area table's generation
(an import that moves or renames areas), which the API reads at most every
LOA_CACHE_RECHECK_SECONDS (api/readcache.py): the bound on how long a changed playlist may still
be served from here. An entry also expires after `max_age` seconds. Each process has its own
cache; the versions make them agree without talking to each other.

Hand-written (a dict in insertion order) rather than cachetools: an LRU with an age is a dozen
lines, and the key already carries the invalidation.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from datetime import datetime
from typing import Final

MAX_ENTRIES: Final = 4096


class PlaylistCache:
    def __init__(self, *, max_age: float, max_entries: int = MAX_ENTRIES) -> None:
        self._max_age = max_age
        self._max_entries = max_entries
        self._entries: OrderedDict[Hashable, tuple[datetime, tuple[bytes, str]]] = OrderedDict()
        self._lock = threading.Lock()  # FastAPI runs the routes in a thread pool

    def get(
        self, key: Hashable, now: datetime, make: Callable[[], tuple[bytes, str]]
    ) -> tuple[bytes, str]:
        """The (body, etag) cached under `key`, or made now and kept."""
        found = self.peek(key, now)
        if found is not None:
            return found
        value = make()  # outside the lock: two pulls of a new key may both make it, harmlessly
        self.put(key, now, value)
        return value

    def peek(self, key: Hashable, now: datetime) -> tuple[bytes, str] | None:
        """The (body, etag) cached under `key`, if younger than `max_age`; else None."""
        with self._lock:
            found = self._entries.get(key)
            if found is not None and (now - found[0]).total_seconds() < self._max_age:
                self._entries.move_to_end(key)
                return found[1]
        return None

    def put(self, key: Hashable, now: datetime, value: tuple[bytes, str]) -> None:
        with self._lock:
            self._entries[key] = (now, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
