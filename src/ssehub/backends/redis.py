"""History and cross-node delivery in a Redis Stream (redis-py's asyncio client).

The stream holds the order and the history; every hub process runs one reader that follows
the stream and feeds its own fan-out, so a publish on any node reaches subscribers on all of
them, and any node can replay from any event id. A hash maps public ids to stream ids; one
Lua script appends a batch, indexes it and trims both, so they never disagree.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Sequence
from typing import cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis import asyncio as aioredis
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, RedisError, ResponseError
from redis.retry import Retry

from ..errors import ConfigError
from ..events import Event, StoredEvent
from . import EARLIEST, REPLAY_PAGE, Replay, Sink, new_event_id

log = logging.getLogger("ssehub.redis")

_SEQ_BITS = 24
_MIN_STREAM = 1024  # the stream also carries live events between nodes: never shorter
_READ_COUNT = 1000

_APPEND = """
local stream, index = KEYS[1], KEYS[2]
local maxlen, max_age_ms, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
local i = 4
for e = 1, n do
  local sid = redis.call('XADD', stream, '*', 'id', ARGV[i], 'topics', ARGV[i + 1],
    'data', ARGV[i + 2], 'private', ARGV[i + 3], 'type', ARGV[i + 4], 'retry', ARGV[i + 5])
  redis.call('HSET', index, ARGV[i], sid)
  out[e] = sid
  i = i + 6
end
local function forget(entries)
  for _, entry in ipairs(entries) do
    local eid = entry[2][2]
    if redis.call('HGET', index, eid) == entry[1] then redis.call('HDEL', index, eid) end
  end
end
local len = redis.call('XLEN', stream)
if len > maxlen then
  forget(redis.call('XRANGE', stream, '-', '+', 'COUNT', len - maxlen))
  redis.call('XTRIM', stream, 'MAXLEN', maxlen)
end
if max_age_ms > 0 then
  local now = redis.call('TIME')
  local cutoff = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - max_age_ms
  local older = redis.call('XRANGE', stream, '-', '(' .. cutoff .. '-0', 'COUNT', 10000)
  if #older > 0 and len - #older >= 1 then
    forget(older)
    redis.call('XTRIM', stream, 'MINID', cutoff .. '-0')
  end
end
return out
"""


_FLOOR = """
local n = tonumber(ARGV[1])
if redis.call('XLEN', KEYS[1]) <= n then return false end
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', n)
return newest[#newest][1]
"""


def position_of(stream_id: str | bytes) -> int:
    """A stream id ``ms-seq`` as one increasing integer."""
    text = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    ms, _, seq = text.partition("-")
    return int(ms) << _SEQ_BITS | int(seq or 0)


def stream_id_of(position: int) -> str:
    return f"{position >> _SEQ_BITS}-{position & ((1 << _SEQ_BITS) - 1)}"


Entries = list[tuple[bytes, dict[bytes, bytes]]]


def _entries(reply: object) -> Entries:
    """redis-py types replies loosely; a stream range is always this shape (bytes mode)."""
    return cast(Entries, reply or [])


def _decode(stream_id: bytes, fields: dict[bytes, bytes]) -> StoredEvent:
    event_id = fields[b"id"].decode()
    type_ = fields[b"type"].decode() or None
    retry = fields[b"retry"].decode()
    event = Event(
        tuple(json.loads(fields[b"topics"])),
        fields[b"data"].decode(),
        fields[b"private"] == b"1",
        event_id,
        type_,
        int(retry) if retry else None,
    )
    position = position_of(stream_id)
    return StoredEvent.accept(event, event_id, position, (position >> _SEQ_BITS) / 1000)


def split_url(url: str) -> tuple[str, str]:
    """The Redis URL for redis-py and the key prefix (``?prefix=`` in the store URL)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = next((v for k, v in query if k == "prefix"), "ssehub")
    rest = urlencode([(k, v) for k, v in query if k != "prefix"])
    return urlunsplit(parts._replace(query=rest)), prefix


class RedisBackend:
    """Redis Streams: XADD with a bounded length, XRANGE for replay, XREAD to follow."""

    def __init__(self, url: str, history_size: int = 10_000, history_max_age: float = 0.0) -> None:
        if history_size < 0 or history_max_age < 0:
            raise ValueError("history bounds must be >= 0")
        redis_url, prefix = split_url(url)
        parts = urlsplit(redis_url)
        self._where = parts.path if parts.scheme == "unix" else parts.netloc.rpartition("@")[2]
        self._shown = url.replace(f":{parts.password}@", ":***@") if parts.password else url
        self.history_size = history_size
        self.history_max_age = history_max_age
        self.stream_key = f"{prefix}:events"
        self.index_key = f"{prefix}:ids"
        # Publishes fail fast when Redis is away (503 to the publisher), never hang.
        fail_fast = {
            "socket_connect_timeout": 1.0,
            "socket_timeout": 2.0,
            "retry": Retry(NoBackoff(), 0),
        }
        self._redis = aioredis.Redis.from_url(redis_url, **fail_fast)  # type: ignore[arg-type]
        self._reader = aioredis.Redis.from_url(
            redis_url, socket_connect_timeout=1.0, socket_timeout=None
        )
        self._append = self._redis.register_script(_APPEND)
        self._sink: Sink | None = None
        self._follow: asyncio.Task[None] | None = None
        self._last_id = EARLIEST

    async def start(self, sink: Sink) -> int:
        self._sink = sink
        try:
            newest = _entries(await self._redis.xrevrange(self.stream_key, count=1))
        except (RedisError, OSError) as exc:
            await self.close()
            raise ConfigError(f"--store {self._shown}: {_why_not(self._where, exc)}") from exc
        last = newest[0][0].decode() if newest else "0-0"
        if newest:
            self._last_id = newest[0][1][b"id"].decode()
        self._follow = asyncio.get_running_loop().create_task(self._read(last))
        return position_of(last)

    async def close(self) -> None:
        self._sink = None
        if self._follow is not None:
            self._follow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follow
        await self._redis.aclose()
        await self._reader.aclose()

    @property
    def last_id(self) -> str:
        return self._last_id

    async def _read(self, last: str) -> None:
        """Follow the stream; on a Redis failure wait and go on from the last id seen."""
        delay = 0.05
        while True:
            try:
                reply = cast(
                    list[tuple[bytes, Entries]],
                    await self._reader.xread(
                        {self.stream_key: last}, count=_READ_COUNT, block=5000
                    ),
                )
            except (RedisError, OSError) as exc:
                log.warning("reading the Redis stream failed (%s); retrying in %.2fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            delay = 0.05
            for _, entries in reply:
                if not entries:
                    continue
                events = [_decode(sid, fields) for sid, fields in entries]
                last = entries[-1][0].decode()
                self._last_id = events[-1].id
                if self._sink is not None:
                    self._sink(events)

    async def append(self, events: Sequence[Event]) -> list[StoredEvent]:
        args: list[str | int] = [
            max(self.history_size, _MIN_STREAM),
            int(self.history_max_age * 1000),
            len(events),
        ]
        ids = []
        for event in events:
            event_id = event.id or new_event_id()
            ids.append(event_id)
            args += [
                event_id,
                json.dumps(event.topics),
                event.data,
                "1" if event.private else "0",
                event.type or "",
                "" if event.retry is None else str(event.retry),
            ]
        try:
            stream_ids = cast(
                list[bytes],
                await self._append(keys=[self.stream_key, self.index_key], args=args),
            )
        except (RedisError, OSError) as exc:
            raise ConnectionError(f"Redis is unavailable: {exc}") from exc
        out = []
        for event, event_id, sid in zip(events, ids, stream_ids, strict=True):
            position = position_of(sid)
            out.append(
                StoredEvent.accept(event, event_id, position, (position >> _SEQ_BITS) / 1000)
            )
        # Delivery, here as on every other node, comes from the reader following the stream.
        return out

    async def broadcast(self, events: Sequence[Event]) -> list[StoredEvent]:
        # Other nodes hear only what the stream carries, so for now these go through it and
        # take room in history like any event (a separate live-only channel is to come).
        return await self.append(events)

    async def since(self, after: str | int, upto: int, limit: int = REPLAY_PAGE) -> Replay:
        try:
            return await self._since(after, upto, limit)
        except (RedisError, OSError) as exc:
            raise ConnectionError(f"Redis is unavailable: {exc}") from exc

    async def _since(self, after: str | int, upto: int, limit: int) -> Replay:
        anchor: int | None = None  # the position replay follows; None: from the oldest
        found = True
        if isinstance(after, int):
            anchor = after
            at = stream_id_of(after)
            found = bool(_entries(await self._redis.xrange(self.stream_key, at, at)))
        elif after != EARLIEST:
            stream_id = cast(bytes | None, await self._redis.hget(self.index_key, after))
            if stream_id is None:
                found = False
            else:
                anchor = position_of(stream_id)
        if upto <= 0 or self.history_size == 0:
            return Replay([], found and after == EARLIEST)
        floor = await self._history_floor()
        if anchor is None or anchor < floor:
            if anchor is not None and found:
                # The stream outlives history: what followed the anchor is lost unless
                # nothing did.
                between = await self._redis.xrange(
                    self.stream_key,
                    "(" + stream_id_of(anchor),
                    "(" + stream_id_of(floor),
                    count=1,
                )
                found = not between
            start = stream_id_of(floor) if floor else "-"
        else:
            start = "(" + stream_id_of(anchor)
        end = stream_id_of(upto)
        # Read in small ranges until the page is full; the first guesses a size, later ones
        # are sized from what came, so big events never load more than a few at once.
        events: list[StoredEvent] = []
        size, count, more = 0, 4, False
        while not more:
            entries = _entries(await self._redis.xrange(self.stream_key, start, end, count=count))
            for sid, fields in entries:
                if size >= limit and events:
                    more = True  # the rest of this range is read again by the next page
                    break
                events.append(_decode(sid, fields))
                size += len(events[-1].wire)
            if len(entries) < count:
                break
            start = "(" + entries[-1][0].decode()
            count = min(max(1, (limit - size) * len(events) // max(size, 1)), _READ_COUNT)
        return Replay(events, found, more)

    async def _history_floor(self) -> int:
        """Position of the oldest event the history holds: the stream may hold more (it is
        never shorter than what carries live events between nodes)."""
        floor = 0
        # Found in Redis, which answers with one stream id: reading the entries before it
        # here would move up to a whole stream of events per page of replay.
        oldest = await self._redis.eval(_FLOOR, 1, self.stream_key, self.history_size)
        if oldest:
            floor = position_of(cast(bytes, oldest))
        if self.history_max_age:
            oldest_ms = int((time.time() - self.history_max_age) * 1000)
            floor = max(floor, oldest_ms << _SEQ_BITS)
        return floor


def _why_not(where: str, exc: BaseException) -> str:
    """Why the first command to Redis failed, and what to check."""
    if isinstance(exc, AuthenticationError):
        return f"Redis at {where} refused the credentials ({exc}): check the URL's user, password"
    if isinstance(exc, ResponseError):
        return f"Redis at {where} refused the first command: {exc}"
    return (
        f"Redis at {where} does not answer ({exc}): check that redis-server runs there and"
        " that the host, port and any firewall let this hub reach it"
    )
