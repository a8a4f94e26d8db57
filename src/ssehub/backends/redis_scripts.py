"""The Redis stream's layout: the Lua scripts that append to it, trim it and report a
reader's place in it, the arguments an append packs, and its entries read back as events."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import cast

from ..contract import new_event_id
from ..events import Event, StoredEvent

SEQ_BITS = 24
READER_SLACK = 10_000  # entries the stream may hold past its bound while a node catches up
_READER_STALE_MS = 30_000  # a reader silent this long is presumed gone (a crashed node)
_FORGET_MAX = 10_000  # entries one append trims at most; the next append goes on

# Every entry carries ``n``, a counter with no holes: a reader that sees n jump knows the
# stream was trimmed past it (a gap), and history's floor is ``counter - history_size``.
APPEND = """
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
SINCE = """
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

REPORT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ' ' .. string.format('%.0f', now))
"""


def append_args(
    events: Sequence[Event],
    history_size: int,
    maxlen: int,
    history_max_age: float,
    broadcast: bool,
) -> tuple[list[str], list[str | int]]:
    """The public ids of ``events`` (made where they have none) and ``APPEND``'s arguments."""
    args: list[str | int] = [
        history_size,
        maxlen,
        maxlen + READER_SLACK,
        int(history_max_age * 1000),
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
    return ids, args


def position_of(stream_id: str | bytes) -> int:
    """A stream id ``ms-seq`` as one increasing integer."""
    text = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    ms, _, seq = text.partition("-")
    return int(ms) << SEQ_BITS | int(seq or 0)


def stream_id_of(position: int) -> str:
    return f"{position >> SEQ_BITS}-{position & ((1 << SEQ_BITS) - 1)}"


Entries = list[tuple[bytes, dict[bytes, bytes]]]


def as_entries(reply: object) -> Entries:
    """redis-py types replies loosely; a stream range is always this shape (bytes mode)."""
    return cast(Entries, reply or [])


def raw_entry(entry: object) -> tuple[bytes, dict[bytes, bytes]]:
    """A stream entry as a script returns it: ``[id, [field, value, ...]]``."""
    sid, flat = cast(tuple[bytes, list[bytes]], entry)
    return sid, dict(zip(flat[::2], flat[1::2], strict=True))


def number(fields: dict[bytes, bytes]) -> int | None:
    """The entry's place in the hole-free count (None for entries written before it)."""
    n = fields.get(b"n")
    return int(n) if n is not None else None


def event_of(fields: dict[bytes, bytes]) -> Event:
    retry = fields[b"retry"].decode()
    return Event(
        tuple(json.loads(fields[b"topics"])),
        fields[b"data"].decode(),
        fields[b"private"] == b"1",
        fields[b"id"].decode(),
        fields[b"type"].decode() or None,
        int(retry) if retry else None,
    )


def decode(stream_id: bytes, fields: dict[bytes, bytes]) -> StoredEvent:
    event = event_of(fields)
    assert event.id is not None
    position = position_of(stream_id)
    return StoredEvent.accept(event, event.id, position, (position >> SEQ_BITS) / 1000)
