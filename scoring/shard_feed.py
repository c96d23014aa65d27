"""A launcher's shard source, iterated on a thread of its own one shard ahead of its reader.

    feed = ShardFeed(shards, stop)            # stop: a threading.Event; setting it ends the feed
    shard = feed.get()                        # the next Shard, or END; waits as long as it takes
    shard = feed.get(timeout=0.01)            # ... or NOT_YET where none came in time

The reader of scoring.pipeline.Prefetcher fills a shard's last batch with the next shard's first
rows. It must not wait on the source for them: a launcher may hand out a shard only once an
earlier one is recorded (Ray), and the rows it would wait with may be the ones that record it.
So it asks the feed, which already holds the next shard or says it is not there.
"""

from __future__ import annotations

import threading
import time
from typing import Iterable

from scoring.dataset import Shard
from scoring.thread_names import name_this_thread

END = object()  # the shard source has no more shards
NOT_YET = object()  # the next shard did not come in time


class Stopped(Exception):
    """The stop event was set: whoever waits on the feed stops where it is."""


class ShardFeed:
    """`shards` iterated on a daemon thread: it takes the next shard from the source as soon as
    the last one was taken with get(), and holds it. An error of the source is held the same way
    and raised by get(); the thread ends after it, after the last shard, or when `stop` is set."""

    def __init__(self, shards: Iterable[Shard], stop: threading.Event):
        self._source, self._stop = shards, stop
        self._changed = threading.Condition()
        self._next = None  # a Shard, END or the source's exception; None while there is none
        self.parked = False  # in the source, which may never return: not worth waiting for
        self.thread = threading.Thread(target=self._run, name="prefetch-shards", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        name_this_thread("bs-shards")
        shards = iter(self._source)
        while True:
            with self._changed:
                while self._next is not None and not self._stop.is_set():
                    self._changed.wait(0.1)
            if self._stop.is_set():
                return
            self.parked = True
            try:
                item = next(shards, END)
            except BaseException as exc:  # raised by get()
                item = exc
            finally:
                self.parked = False
            with self._changed:
                self._next = item
                self._changed.notify_all()
            if not isinstance(item, Shard):
                return

    def get(self, timeout: float | None = None):
        """The next shard, END, or NOT_YET where none came within `timeout` seconds (None: as
        long as it takes). The source's error is raised here; Stopped once `stop` is set."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while self._next is None:
                if self._stop.is_set():
                    raise Stopped
                left = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
                if left <= 0:
                    return NOT_YET
                self._changed.wait(left)
            item, self._next = self._next, None
            self._changed.notify_all()
        if isinstance(item, BaseException):
            raise item
        return item
