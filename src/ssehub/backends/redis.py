"""History and cross-node delivery in a Redis Stream (redis-py's asyncio client).

The stream holds the order and the history; every hub process runs one reader that follows
the stream and feeds its own fan-out, so a publish on any node reaches subscribers on all of
them, and any node can replay from any event id. A hash maps public ids to stream ids; one
Lua script appends a batch, indexes it and trims both, so they never disagree.

The parts: ``redis_scripts`` (the scripts, their arguments, entries read back as events),
``redis_reader`` (this node's XREAD loop, gap notices, position reports), ``redis_failures``
(what a failed command means: not stored, or outcome unknown).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis import asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from ..contract import EARLIEST, REPLAY_PAGE, Appended, GapSink, Replay, Sink, transient
from ..errors import ConfigError
from ..events import Event, StoredEvent
from ..settings import DEFAULTS
from .redis_failures import run_script, say_hello, why_not
from .redis_reader import READ_COUNT, StreamReader
from .redis_scripts import (
    APPEND,
    SEQ_BITS,
    SINCE,
    Entries,
    append_args,
    as_entries,
    decode,
    number,
    position_of,
    raw_entry,
    stream_id_of,
)

__all__ = ["RedisBackend", "position_of", "split_url", "stream_id_of"]

_MIN_STREAM = 1024  # the stream also carries live events between nodes: never shorter
_START_LOOK = 16  # entries start() reads back for the newest stored one (past broadcasts)


def split_url(url: str) -> tuple[str, str]:
    """The Redis URL for redis-py and the key prefix (``?prefix=`` in the store URL)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = next((v for k, v in query if k == "prefix"), "ssehub")
    rest = urlencode([(k, v) for k, v in query if k != "prefix"])
    return urlunsplit(parts._replace(query=rest)), prefix


class RedisBackend:
    """Redis Streams: XADD with a bounded length, XRANGE for replay, XREAD to follow.

    Each node's reader publishes how far it has read; trimming waits for the slowest live
    reader (up to ``READER_SLACK`` entries past the bound), so a burst longer than the
    stream, or a node paused for a moment, loses nothing. A reader pushed past anyway sees
    the jump in the entries' count and reports a :class:`Gap`.
    """

    def __init__(
        self,
        url: str,
        history_size: int = DEFAULTS.history_size,
        history_max_age: float = DEFAULTS.history_max_age,
    ) -> None:
        if history_size < 0 or history_max_age < 0:
            raise ValueError("history bounds must be >= 0")
        redis_url, prefix = split_url(url)
        parts = urlsplit(redis_url)
        self._where = parts.path if parts.scheme == "unix" else parts.netloc.rpartition("@")[2]
        self._shown = url.replace(f":{parts.password}@", ":***@") if parts.password else url
        self._with_password = bool(parts.password)
        self.history_size = history_size
        self.history_max_age = history_max_age
        self.stream_key = f"{prefix}:events"
        self.index_key = f"{prefix}:ids"
        self.counter_key = f"{prefix}:count"
        self.readers_key = f"{prefix}:readers"
        self.maxlen = max(history_size, _MIN_STREAM)
        # Commands fail fast when Redis is away (an answer to the publisher), never hang;
        # ``run_script`` reconnects once itself, where it knows a second try is safe.
        fail_fast = {
            "socket_connect_timeout": 1.0,
            "socket_timeout": 2.0,
            "retry": Retry(NoBackoff(), 0),
            # RESP2: with RESP3, redis-py 8.1 hands out pooled connections the server has
            # closed without its check at checkout (redis-py #4252), so a command goes out
            # on a dead socket and its outcome becomes unknown instead of "not sent".
            "protocol": 2,
            # A stall during a new connection's handshake is "not stored", not "unknown".
            "redis_connect_func": say_hello,
        }
        self._redis = aioredis.Redis.from_url(redis_url, **fail_fast)  # type: ignore[arg-type]
        self._reader = StreamReader(redis_url, self.stream_key, self.readers_key)
        self._append = self._redis.register_script(APPEND)
        self._since_script = self._redis.register_script(SINCE)
        self.live_key = f"{prefix}:live"

    @property
    def on_gap(self) -> GapSink | None:
        return self._reader.on_gap

    @on_gap.setter
    def on_gap(self, on_gap: GapSink | None) -> None:
        self._reader.on_gap = on_gap

    async def start(self, sink: Sink) -> int:
        self._reader.sink = sink
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.xrevrange(self.stream_key, count=_START_LOOK)
                pipe.get(self.counter_key)
                reply, count = await pipe.execute()
            newest = as_entries(reply)
            stored = await self._newest_stored(newest)
        except (RedisError, OSError) as exc:
            await self.close()
            why = why_not(self._where, exc, self._with_password)
            raise ConfigError(f"--store {self._shown}: {why}") from exc
        last = newest[0][0].decode() if newest else "0-0"
        expected = int(count or 0) + 1
        if stored is not None:
            self._reader.last_id = stored[1][b"id"].decode()
            self._reader.stored_position = position_of(stored[0])
        await self._reader.start(last, expected)
        return position_of(last)

    async def _newest_stored(self, newest: Entries) -> tuple[bytes, dict[bytes, bytes]] | None:
        """The newest stored (not broadcast) entry: ``newest`` first, then further back
        while the stream holds only broadcasts (they may fill its end after a burst)."""
        page = newest
        while True:
            for sid, fields in page:
                if b"live" not in fields:
                    return sid, fields
            if len(page) < (_START_LOOK if page is newest else READ_COUNT):
                return None
            before = "(" + page[-1][0].decode()
            page = as_entries(
                await self._redis.xrevrange(self.stream_key, before, "-", count=READ_COUNT)
            )

    async def close(self) -> None:
        await self._reader.stop()
        # Stop holding back trimming now rather than when the registration goes stale.
        with contextlib.suppress(RedisError, OSError):
            await self._redis.hdel(self.readers_key, self._reader.name)
        await self._redis.aclose()
        await self._reader.aclose()

    @property
    def last_id(self) -> str:
        return self._reader.last_id

    async def append(self, events: Sequence[Event]) -> list[StoredEvent]:
        return await self._add(events, broadcast=False)

    async def _add(self, events: Sequence[Event], *, broadcast: bool) -> list[StoredEvent]:
        ids, args = append_args(
            events, self.history_size, self.maxlen, self.history_max_age, broadcast
        )
        keys = [self.stream_key, self.index_key, self.counter_key, self.readers_key, self.live_key]
        reply = cast(list[object], await run_script(self._append, keys, args))
        out = []
        repeats = 0
        for event, event_id, stored in zip(events, ids, reply, strict=True):
            if isinstance(stored, bytes):
                position = position_of(stored)
                when = (position >> SEQ_BITS) / 1000
                if broadcast:
                    event = replace(event, id=event_id)
                    out.append(transient(event, self._reader.stored_position, when))
                else:
                    out.append(StoredEvent.accept(event, event_id, position, when))
            else:  # an id history holds: the event stored then is the answer
                out.append(decode(*raw_entry(stored)))
                repeats += 1
        # Delivery, here as on every other node, comes from the reader following the stream.
        return Appended(out, repeats)

    async def broadcast(self, events: Sequence[Event]) -> list[StoredEvent]:
        """Through the stream, in order with stored events, marked ``live``: no count, no
        index entry, skipped by replay, and bounded apart from history, so broadcasts never
        cost stored events their room."""
        return await self._add(events, broadcast=True)

    async def since(self, after: str | int, upto: int, limit: int = REPLAY_PAGE) -> Replay:
        try:
            return await self._since(after, upto, limit)
        except (RedisError, OSError) as exc:
            raise ConnectionError(f"Redis is unavailable: {exc}") from exc

    async def _since(self, after: str | int, upto: int, limit: int) -> Replay:
        if self.history_size == 0:
            return Replay([], after == EARLIEST)
        if isinstance(after, int):
            kind, value = "at", stream_id_of(after)
        else:
            kind, value = ("", "") if after == EARLIEST else ("id", after)
        keys = [self.stream_key, self.index_key, self.counter_key]
        args: list[str | int] = [kind, value, self.history_size]
        count, anchor_entry, floor_id = cast(
            list[object], await run_script(self._since_script, keys, args)
        )
        floor_n = int(cast(int, count)) - self.history_size
        oldest_ms = int((time.time() - self.history_max_age) * 1000) if self.history_max_age else 0

        def kept(sid: bytes, fields: dict[bytes, bytes]) -> bool:
            if b"live" in fields:
                return False
            n = number(fields)
            return (n is None or n > floor_n) and position_of(sid) >> SEQ_BITS >= oldest_ms

        anchor = None if anchor_entry is None else raw_entry(anchor_entry)
        found = after == EARLIEST or (anchor is not None and kept(*anchor))
        if anchor is not None and found:
            start = "(" + anchor[0].decode()
        else:  # from the oldest event history holds
            start_at = max(
                position_of(cast(bytes, floor_id)) if floor_id else 0, oldest_ms << SEQ_BITS
            )
            start = stream_id_of(start_at) if start_at else "-"
        position = position_of(anchor[0]) if anchor is not None and found else 0
        if upto < position:  # this node has not dispatched the anchor yet: the hub waits
            return Replay([], True, False, position)
        end = stream_id_of(upto)
        # Read in small ranges until the page is full; the first guesses a size, later ones
        # are sized from what came, so big events never load more than a few at once.
        events: list[StoredEvent] = []
        size, batch, more = 0, 4, False
        while not more:
            entries = as_entries(await self._redis.xrange(self.stream_key, start, end, count=batch))
            for sid, fields in entries:
                if size >= limit and events:
                    more = True  # the rest of this range is read again by the next page
                    break
                if not kept(sid, fields):
                    continue
                events.append(decode(sid, fields))
                size += len(events[-1].wire)
            if len(entries) < batch:
                break
            start = "(" + entries[-1][0].decode()
            batch = min(max(1, (limit - size) * len(events) // max(size, 1)), READ_COUNT)
        return Replay(events, found, more, position)
