"""scoring/shard_feed.py: the shard source on a thread of its own, one shard ahead."""

from __future__ import annotations

import threading
import time

import pytest

from scoring.dataset import Shard
from scoring.shard_feed import END, NOT_YET, ShardFeed, Stopped


def _shards(n: int) -> list[Shard]:
    return [Shard(k, "f.parquet", (k, k + 1), 10 * k, 10) for k in range(n)]


def test_shards_come_in_order_then_the_end():
    stop = threading.Event()
    feed = ShardFeed(iter(_shards(3)), stop)
    assert [feed.get().index for _ in range(3)] == [0, 1, 2]
    assert feed.get() is END
    feed.thread.join(5)
    assert not feed.thread.is_alive()


def test_the_source_is_asked_one_shard_ahead_and_no_further():
    asked = []

    def source():
        for shard in _shards(5):
            asked.append(shard.index)
            yield shard

    feed = ShardFeed(source(), threading.Event())
    deadline = time.monotonic() + 5
    while not asked and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    assert asked == [0]  # held, not yet taken: the source is not asked again
    assert feed.get().index == 0
    deadline = time.monotonic() + 5
    while len(asked) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert asked == [0, 1]  # taken: the next one is fetched at once


def test_a_source_that_holds_back_gives_not_yet_within_the_timeout():
    release = threading.Event()

    def source():
        yield _shards(1)[0]
        release.wait(10)  # a launcher that hands out the next shard later (Ray)
        yield _shards(2)[1]

    feed = ShardFeed(source(), threading.Event())
    assert feed.get().index == 0
    start = time.monotonic()
    assert feed.get(timeout=0.05) is NOT_YET
    assert 0.04 <= time.monotonic() - start < 1
    assert feed.parked  # waiting in the source
    release.set()
    assert feed.get(timeout=5).index == 1


def test_an_error_of_the_source_is_raised_by_get_in_its_turn():
    def source():
        yield _shards(1)[0]
        raise ConnectionError("the driver went away")

    feed = ShardFeed(source(), threading.Event())
    assert feed.get().index == 0
    with pytest.raises(ConnectionError, match="driver went away"):
        feed.get()


def test_stop_ends_a_wait_and_the_thread():
    stop = threading.Event()
    release = threading.Event()

    def source():
        release.wait(10)
        yield from _shards(1)

    feed = ShardFeed(source(), stop)
    threading.Timer(0.05, stop.set).start()
    with pytest.raises(Stopped):
        feed.get()  # no timeout: only the stop ends it
    release.set()
    feed.thread.join(5)
    assert not feed.thread.is_alive()
