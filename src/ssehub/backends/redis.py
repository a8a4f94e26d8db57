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
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis import asyncio as aioredis
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import AuthenticationError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from ..contract import (
    EARLIEST,
    REPLAY_PAGE,
    Appended,
    Gap,
    GapSink,
    OutcomeUnknown,
    Replay,
    Sink,
    new_event_id,
    transient,
)
from ..errors import ConfigError
from ..events import Event, StoredEvent
from ..settings import DEFAULTS

log = logging.getLogger("ssehub.redis")

_SEQ_BITS = 24
_MIN_STREAM = 1024  # the stream also carries live events between nodes: never shorter
_READ_COUNT = 1000
_READ_BYTES = 4 << 20  # what one read of the stream should move at most, roughly
_BLOCK_MS = 5000
_READER_SLACK = 10_000  # entries the stream may hold past its bound while a node catches up
_READER_STALE_MS = 30_000  # a reader silent this long is presumed gone (a crashed node)
_REPORT_EVERY = 1.0  # a reader reports its position this often (seconds) when quiet,
_REPORT_AFTER = 500  # and after reading this many entries, so trimming keeps close behind
_FORGET_MAX = 10_000  # entries one append trims at most; the next append goes on
_START_LOOK = 16  # entries start() reads back for the newest stored one (past broadcasts)
_KEEPALIVE = {  # a silent reader connection is probed after 5 s and dropped ~6 s later
    option: value
    for name, value in (("TCP_KEEPIDLE", 5), ("TCP_KEEPINTVL", 2), ("TCP_KEEPCNT", 3))
    if (option := getattr(socket, name, None)) is not None
}

# Every entry carries ``n``, a counter with no holes: a reader that sees n jump knows the
# stream was trimmed past it (a gap), and history's floor is ``counter - history_size``.
_APPEND = """
local stream, index, counter, readers, live = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local history, maxlen, hard = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local max_age_ms, stale_ms, forget_max = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local n, broadcast = tonumber(ARGV[7]), ARGV[8] == '1'
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cutoff = now - max_age_ms

local function split(sid)
  local ms, seq = string.match(sid, '^(%d+)%-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function not_after(a, b)
  local ams, aseq = split(a)
  local bms, bseq = split(b)
  return ams < bms or (ams == bms and aseq <= bseq)
end
local function field(entry, name)
  local f = entry[2]
  for k = 1, #f, 2 do
    if f[k] == name then return f[k + 1] end
  end
  return nil
end

local seq = tonumber(redis.call('GET', counter) or '0')
-- The entry history holds for a public id, if any: a publisher's retry is answered with it.
local function kept(eid)
  if history == 0 then return nil end
  local sid = redis.call('HGET', index, eid)
  if not sid then return nil end
  local found = redis.call('XRANGE', stream, sid, sid)
  if #found == 0 then return nil end
  local en = tonumber(field(found[1], 'n') or '0')
  if en > 0 and en <= seq - history then return nil end
  if max_age_ms > 0 and split(sid) < cutoff then return nil end
  return found[1]
end

local out, added = {}, 0
local i = 9
for e = 1, n do
  local eid = ARGV[i]
  local entry = nil
  if not broadcast then entry = kept(eid) end
  if broadcast then
    -- Live only: no count n, no index entry; replay skips it, and its room is its own.
    out[e] = redis.call('XADD', stream, '*', 'id', eid, 'live', '1', 'topics', ARGV[i + 1],
      'data', ARGV[i + 2], 'private', ARGV[i + 3], 'type', ARGV[i + 4], 'retry', ARGV[i + 5])
    added = added + 1
  elseif entry then
    out[e] = entry
  else
    seq = seq + 1
    local sid = redis.call('XADD', stream, '*', 'id', eid, 'n', seq, 'topics', ARGV[i + 1],
      'data', ARGV[i + 2], 'private', ARGV[i + 3], 'type', ARGV[i + 4], 'retry', ARGV[i + 5])
    redis.call('HSET', index, eid, sid)
    out[e] = sid
    added = added + 1
  end
  i = i + 6
end
if not broadcast and added > 0 then redis.call('SET', counter, seq) end

-- The slowest live reader: trimming waits for it (up to a bound).
local slowest = nil
local r = redis.call('HGETALL', readers)
for k = 1, #r, 2 do
  local pos, seen = string.match(r[k + 1], '^(%d+%-%d+) (%d+)$')
  if not pos or tonumber(seen) < now - stale_ms then
    redis.call('HDEL', readers, r[k])
  elseif not slowest or not_after(pos, slowest) then
    slowest = pos
  end
end

-- Broadcasts leave as soon as every live reader has read them (XDEL: they may sit between
-- stored events), or when more than maxlen wait: they never cost history its room.
for e = 1, (broadcast and n or 0) do redis.call('RPUSH', live, out[e]) end
local waiting = redis.call('LLEN', live)
local dropped = 0
while dropped < forget_max do
  local sid = redis.call('LINDEX', live, 0)
  if not sid then break end
  if waiting - dropped <= maxlen and slowest and not not_after(sid, slowest) then break end
  redis.call('LPOP', live)
  redis.call('XDEL', stream, sid)
  dropped = dropped + 1
end

-- Trim the oldest entries past the length bound or the age bound, at most forget_max at
-- once and never this batch's own, and forget their ids with them so the two agree.
local len = redis.call('XLEN', stream)
local cut = len - maxlen - (waiting - dropped)
local entries = nil
if max_age_ms > 0 then
  entries = redis.call('XRANGE', stream, '-', '(' .. string.format('%.0f', cutoff) .. '-0',
    'COUNT', forget_max)
  if #entries > cut then cut = #entries end
end
cut = math.min(cut, len - math.max(added, 1), forget_max)
if cut <= 0 then return out end
if not entries or #entries < cut then
  entries = redis.call('XRANGE', stream, '-', '+', 'COUNT', cut)
end
-- Only what every live reader has read goes, unless the stream would pass its hard bound:
-- then a reader that far behind loses events, and sees the jump in n.
local go = cut
if slowest then
  local read = 0
  for k = 1, cut do
    if not_after(entries[k][1], slowest) then read = k else break end
  end
  go = math.max(read, math.min(cut, len - hard))
end
if go <= 0 then return out end
for k = 1, go do
  local eid = field(entries[k], 'id')
  if eid and not field(entries[k], 'live') and redis.call('HGET', index, eid) == entries[k][1] then
    redis.call('HDEL', index, eid)
  end
end
redis.call('XTRIM', stream, 'MAXLEN', len - go)
return out
"""

# Where replay starts: the anchor entry itself (an index entry alone proves nothing: the
# stream may have been trimmed past it), and the oldest entry history holds by count,
# found from the entries' count n in Redis (the stream may be longer than history).
_SINCE = """
local stream, index, counter = KEYS[1], KEYS[2], KEYS[3]
local kind, value, history = ARGV[1], ARGV[2], tonumber(ARGV[3])
local seq = tonumber(redis.call('GET', counter) or '0')
local sid = nil
if kind == 'id' then sid = redis.call('HGET', index, value) elseif kind == 'at' then sid = value end
local anchor = false
if sid then
  local found = redis.call('XRANGE', stream, sid, sid)
  if #found > 0 then anchor = found[1] end
end
local floor = false
local head = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
if #head > 0 then
  floor = head[1][1]
  local first_n = 0
  local f = head[1][2]
  for k = 1, #f, 2 do
    if f[k] == 'n' then first_n = tonumber(f[k + 1]) end
  end
  local skip = seq - history + 1 - first_n
  if first_n > 0 and skip > 0 then
    local run = redis.call('XRANGE', stream, '-', '+', 'COUNT', skip + 1)
    floor = run[#run][1]
  end
end
return {seq, anchor, floor}
"""

_REPORT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ' ' .. string.format('%.0f', now))
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


def _raw_entry(entry: object) -> tuple[bytes, dict[bytes, bytes]]:
    """A stream entry as a script returns it: ``[id, [field, value, ...]]``."""
    sid, flat = cast(tuple[bytes, list[bytes]], entry)
    return sid, dict(zip(flat[::2], flat[1::2], strict=True))


def _number(fields: dict[bytes, bytes]) -> int | None:
    """The entry's place in the hole-free count (None for entries written before it)."""
    n = fields.get(b"n")
    return int(n) if n is not None else None


def _event(fields: dict[bytes, bytes]) -> Event:
    retry = fields[b"retry"].decode()
    return Event(
        tuple(json.loads(fields[b"topics"])),
        fields[b"data"].decode(),
        fields[b"private"] == b"1",
        fields[b"id"].decode(),
        fields[b"type"].decode() or None,
        int(retry) if retry else None,
    )


def _decode(stream_id: bytes, fields: dict[bytes, bytes]) -> StoredEvent:
    event = _event(fields)
    assert event.id is not None
    position = position_of(stream_id)
    return StoredEvent.accept(event, event.id, position, (position >> _SEQ_BITS) / 1000)


def _never_sent(exc: BaseException) -> bool:
    """Whether a failure came while connecting, before a command could reach Redis."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError | socket.gaierror | FileNotFoundError):
            return True
        seen = seen.__cause__ or seen.__context__
    text = str(exc)  # redis-py's own wording for its connect phase
    return text.startswith("Timeout connecting") or " connecting to " in text


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
    reader (up to ``_READER_SLACK`` entries past the bound), so a burst longer than the
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
        self.on_gap: GapSink | None = None
        # Commands fail fast when Redis is away (an answer to the publisher), never hang;
        # ``_run`` reconnects once itself, where it knows a second try is safe.
        fail_fast = {
            "socket_connect_timeout": 1.0,
            "socket_timeout": 2.0,
            "retry": Retry(NoBackoff(), 0),
            # RESP2: with RESP3, redis-py 8.1 hands out pooled connections the server has
            # closed without its check at checkout (redis-py #4252), so a command goes out
            # on a dead socket and its outcome becomes unknown instead of "not sent".
            "protocol": 2,
        }
        self._redis = aioredis.Redis.from_url(redis_url, **fail_fast)  # type: ignore[arg-type]
        # The reader blocks in XREAD; TCP keepalive finds a peer that vanished without a FIN
        # (a failover, a partition). Not a socket timeout: redis-py can swallow a
        # cancellation of a blocking read that has one, and close() would never return.
        self._reader = aioredis.Redis.from_url(
            redis_url,
            socket_connect_timeout=1.0,
            socket_timeout=None,
            protocol=2,
            socket_keepalive=True,
            socket_keepalive_options=_KEEPALIVE,
        )
        self._append = self._redis.register_script(_APPEND)
        self._since_script = self._redis.register_script(_SINCE)
        self._report = self._reader.register_script(_REPORT)
        self._name = uuid.uuid4().hex
        self._sink: Sink | None = None
        self._follow: asyncio.Task[None] | None = None
        self._last_id = EARLIEST
        self._stored_position = 0  # newest stored event read: what a broadcast carries
        self.live_key = f"{prefix}:live"

    async def start(self, sink: Sink) -> int:
        self._sink = sink
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.xrevrange(self.stream_key, count=_START_LOOK)
                pipe.get(self.counter_key)
                reply, count = await pipe.execute()
            newest = _entries(reply)
            stored = await self._newest_stored(newest)
        except (RedisError, OSError) as exc:
            await self.close()
            why = _why_not(self._where, exc, self._with_password)
            raise ConfigError(f"--store {self._shown}: {why}") from exc
        last = newest[0][0].decode() if newest else "0-0"
        expected = int(count or 0) + 1
        if stored is not None:
            self._last_id = stored[1][b"id"].decode()
            self._stored_position = position_of(stored[0])
        # Registered before the first append can trim: nothing this node has not read goes.
        await self._report(keys=[self.readers_key], args=[self._name, last])
        self._follow = asyncio.get_running_loop().create_task(self._read(last, expected))
        return position_of(last)

    async def _newest_stored(self, newest: Entries) -> tuple[bytes, dict[bytes, bytes]] | None:
        """The newest stored (not broadcast) entry: ``newest`` first, then further back
        while the stream holds only broadcasts (they may fill its end after a burst)."""
        page = newest
        while True:
            for sid, fields in page:
                if b"live" not in fields:
                    return sid, fields
            if len(page) < (_START_LOOK if page is newest else _READ_COUNT):
                return None
            before = "(" + page[-1][0].decode()
            page = _entries(
                await self._redis.xrevrange(self.stream_key, before, "-", count=_READ_COUNT)
            )

    async def close(self) -> None:
        self._sink = None
        self.on_gap = None
        if self._follow is not None:
            self._follow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follow
        # Stop holding back trimming now rather than when the registration goes stale.
        with contextlib.suppress(RedisError, OSError):
            await self._redis.hdel(self.readers_key, self._name)
        await self._redis.aclose()
        await self._reader.aclose()

    @property
    def last_id(self) -> str:
        return self._last_id

    async def _read(self, last: str, expected: int | None) -> None:
        """Follow the stream; on a Redis failure wait and go on from the last id seen."""
        loop = asyncio.get_running_loop()
        delay = 0.05
        reported, unreported = loop.time(), 0
        count = 16  # until the size of the events is known
        while self._sink is not None:
            try:
                if unreported >= _REPORT_AFTER or loop.time() - reported >= _REPORT_EVERY:
                    await self._report(keys=[self.readers_key], args=[self._name, last])
                    reported, unreported = loop.time(), 0
                reply = cast(
                    list[tuple[bytes, Entries]],
                    await self._reader.xread({self.stream_key: last}, count=count, block=_BLOCK_MS),
                )
            except (RedisError, OSError) as exc:
                log.warning("reading the Redis stream failed (%s); retrying in %.2fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            delay = 0.05
            for _, entries in reply:
                if entries:
                    expected = self._feed(entries, expected)
                    last = entries[-1][0].decode()
                    unreported += len(entries)
                    # Sized from what came: 1000 large events would be a gigabyte at once.
                    size = sum(len(v) for _, fields in entries for v in fields.values())
                    count = max(1, min(_READ_COUNT, _READ_BYTES * len(entries) // max(size, 1)))

    def _feed(self, entries: Entries, expected: int | None) -> int | None:
        """Hand entries to the sink in order, with a gap notice where the count jumps."""
        batch: list[StoredEvent] = []
        for sid, fields in entries:
            if b"live" in fields:  # a broadcast: delivered, never a resume point
                when = (position_of(sid) >> _SEQ_BITS) / 1000
                batch.append(transient(_event(fields), self._stored_position, when))
                continue
            event = _decode(sid, fields)
            self._stored_position = event.position
            n = _number(fields)
            if n is not None and expected is not None and n != expected:
                # n < expected: the counter restarted (Redis lost its data): how many is unknown.
                missed = n - expected if n > expected else None
                log.warning(
                    "this node's reader fell behind the Redis stream: %s events trimmed "
                    "before it read them",
                    "some" if missed is None else missed,
                )
                if batch and self._sink is not None:
                    self._sink(batch)
                batch = []
                if self.on_gap is not None:
                    self.on_gap(Gap(missed, event.id, event))
            if n is not None:
                expected = n + 1
            batch.append(event)
            self._last_id = event.id
        if self._sink is not None:
            self._sink(batch)
        return expected

    async def _run(self, script: AsyncScript, keys: list[str], args: list[str | int]) -> object:
        """Run a script, reconnecting once when the connection was lost: Redis closes idle
        connections (its ``timeout``), restarts and fails over while the pool holds them.

        Both scripts may run twice: reading is harmless, and an append of ids history
        already holds returns what was stored. A timeout is not retried: Redis is there but
        slow, and a second wait would double the publisher's. Raises ConnectionError when
        no attempt can have reached Redis, OutcomeUnknown when one may have."""
        try:
            return await script(keys=keys, args=args)
        except ResponseError as exc:  # Redis answered: it did not run the script
            raise ConnectionError(f"Redis refused the command: {exc}") from exc
        except RedisTimeoutError as exc:
            if _never_sent(exc):
                raise ConnectionError(f"Redis is unavailable: {exc}") from exc
            raise OutcomeUnknown(f"Redis did not answer in time ({exc})") from exc
        except (RedisError, OSError) as exc:
            sent = not _never_sent(exc)
            log.info("Redis command failed (%s); reconnecting once", exc)
        try:
            return await script(keys=keys, args=args)
        except ResponseError as exc:
            raise ConnectionError(f"Redis refused the command: {exc}") from exc
        except (RedisError, OSError) as exc:
            if not sent and _never_sent(exc):
                raise ConnectionError(f"Redis is unavailable: {exc}") from exc
            raise OutcomeUnknown(f"Redis did not answer ({exc})") from exc

    async def append(self, events: Sequence[Event]) -> list[StoredEvent]:
        return await self._add(events, broadcast=False)

    async def _add(self, events: Sequence[Event], *, broadcast: bool) -> list[StoredEvent]:
        args: list[str | int] = [
            self.history_size,
            self.maxlen,
            self.maxlen + _READER_SLACK,
            int(self.history_max_age * 1000),
            _READER_STALE_MS,
            _FORGET_MAX,
            len(events),
            "1" if broadcast else "0",
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
        keys = [self.stream_key, self.index_key, self.counter_key, self.readers_key, self.live_key]
        reply = cast(list[object], await self._run(self._append, keys, args))
        out = []
        repeats = 0
        for event, event_id, stored in zip(events, ids, reply, strict=True):
            if isinstance(stored, bytes):
                position = position_of(stored)
                when = (position >> _SEQ_BITS) / 1000
                if broadcast:
                    event = replace(event, id=event_id)
                    out.append(transient(event, self._stored_position, when))
                else:
                    out.append(StoredEvent.accept(event, event_id, position, when))
            else:  # an id history holds: the event stored then is the answer
                out.append(_decode(*_raw_entry(stored)))
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
            list[object], await self._run(self._since_script, keys, args)
        )
        floor_n = int(cast(int, count)) - self.history_size
        oldest_ms = int((time.time() - self.history_max_age) * 1000) if self.history_max_age else 0

        def kept(sid: bytes, fields: dict[bytes, bytes]) -> bool:
            if b"live" in fields:
                return False
            n = _number(fields)
            return (n is None or n > floor_n) and position_of(sid) >> _SEQ_BITS >= oldest_ms

        anchor = None if anchor_entry is None else _raw_entry(anchor_entry)
        found = after == EARLIEST or (anchor is not None and kept(*anchor))
        if anchor is not None and found:
            start = "(" + anchor[0].decode()
        else:  # from the oldest event history holds
            start_at = max(
                position_of(cast(bytes, floor_id)) if floor_id else 0, oldest_ms << _SEQ_BITS
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
            entries = _entries(await self._redis.xrange(self.stream_key, start, end, count=batch))
            for sid, fields in entries:
                if size >= limit and events:
                    more = True  # the rest of this range is read again by the next page
                    break
                if not kept(sid, fields):
                    continue
                events.append(_decode(sid, fields))
                size += len(events[-1].wire)
            if len(entries) < batch:
                break
            start = "(" + entries[-1][0].decode()
            batch = min(max(1, (limit - size) * len(events) // max(size, 1)), _READ_COUNT)
        return Replay(events, found, more, position)


def _why_not(where: str, exc: BaseException, with_password: bool) -> str:
    """Why the first command to Redis failed, and what to check."""
    if isinstance(exc, AuthenticationError) and not with_password:
        return (
            f"Redis at {where} requires a password: put it in the URL,"
            " redis://:PASSWORD@HOST:PORT/DB (or redis://USER:PASSWORD@…)"
        )
    if isinstance(exc, AuthenticationError):
        return f"Redis at {where} refused the credentials ({exc}): check the URL's user, password"
    if isinstance(exc, ResponseError):
        return f"Redis at {where} refused the first command: {exc}"
    return (
        f"Redis at {where} does not answer ({exc}): check that redis-server runs there and"
        " that the host, port and any firewall let this hub reach it"
    )
