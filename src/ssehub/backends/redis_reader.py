"""This node's reader of the Redis stream: an XREAD loop feeding the hub's sink in order, a
gap notice where the entries' count jumps, and reports of how far it has read (trimming
waits for the slowest live reader)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import uuid
from typing import cast

from redis import asyncio as aioredis
from redis.exceptions import RedisError

from ..contract import EARLIEST, Gap, GapSink, Sink, transient
from ..events import StoredEvent
from .redis_scripts import REPORT, SEQ_BITS, Entries, decode, event_of, number, position_of

log = logging.getLogger("ssehub.redis")

READ_COUNT = 1000
_READ_BYTES = 4 << 20  # what one read of the stream should move at most, roughly
_BLOCK_MS = 5000
_REPORT_EVERY = 1.0  # a reader reports its position this often (seconds) when quiet,
_REPORT_AFTER = 500  # and after reading this many entries, so trimming keeps close behind
_KEEPALIVE = {  # a silent reader connection is probed after 5 s and dropped ~6 s later
    option: value
    for name, value in (("TCP_KEEPIDLE", 5), ("TCP_KEEPINTVL", 2), ("TCP_KEEPCNT", 3))
    if (option := getattr(socket, name, None)) is not None
}


class StreamReader:
    """Follows ``stream_key`` on its own connection and reports its place in
    ``readers_key`` under a name of its own."""

    def __init__(self, redis_url: str, stream_key: str, readers_key: str) -> None:
        self.stream_key = stream_key
        self.readers_key = readers_key
        # The reader blocks in XREAD; TCP keepalive finds a peer that vanished without a FIN
        # (a failover, a partition). Not a socket timeout: redis-py can swallow a
        # cancellation of a blocking read that has one, and close() would never return.
        self._client = aioredis.Redis.from_url(
            redis_url,
            socket_connect_timeout=1.0,
            socket_timeout=None,
            protocol=2,
            socket_keepalive=True,
            socket_keepalive_options=_KEEPALIVE,
        )
        self._report = self._client.register_script(REPORT)
        self.name = uuid.uuid4().hex
        self.sink: Sink | None = None
        self.on_gap: GapSink | None = None
        self._follow: asyncio.Task[None] | None = None
        self.last_id = EARLIEST
        self.stored_position = 0  # newest stored event read: what a broadcast carries
        self._faulted = False  # the sink failed on a batch: the next stored event opens a gap

    async def start(self, last: str, expected: int | None) -> None:
        """Register at ``last`` (before the first append can trim: nothing this node has
        not read goes), then follow from there."""
        await self.report(last)
        self._follow = asyncio.get_running_loop().create_task(self._read(last, expected))

    async def report(self, last: str) -> None:
        await self._report(keys=[self.readers_key], args=[self.name, last])

    async def stop(self) -> None:
        """Stop delivering and following (the registration is the backend's to remove)."""
        self.sink = None
        self.on_gap = None
        if self._follow is not None:
            self._follow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follow

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _read(self, last: str, expected: int | None) -> None:
        """Follow the stream; on a Redis failure wait and go on from the last id seen."""
        loop = asyncio.get_running_loop()
        delay = 0.05
        reported, unreported = loop.time(), 0
        count = 16  # until the size of the events is known
        while self.sink is not None:
            try:
                if unreported >= _REPORT_AFTER or loop.time() - reported >= _REPORT_EVERY:
                    await self.report(last)
                    reported, unreported = loop.time(), 0
                # With entries read and not yet reported, wait no longer than the report is
                # due: trimming waits for it, and a quiet stream would hold it for _BLOCK_MS.
                block = _BLOCK_MS
                if unreported:
                    due = reported + _REPORT_EVERY - loop.time()
                    block = max(1, min(_BLOCK_MS, int(due * 1000) + 1))
                reply = cast(
                    list[tuple[bytes, Entries]],
                    await self._client.xread({self.stream_key: last}, count=count, block=block),
                )
            except (RedisError, OSError) as exc:
                log.warning("reading the Redis stream failed (%s); retrying in %.2fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            delay = 0.05
            for _, entries in reply:
                if entries:
                    try:
                        expected = self._feed(entries, expected)
                    except Exception:
                        # A fault of the hub's own, mid-batch: some subscribers may lack some
                        # of these events. Dying here would leave the node deaf, silently.
                        log.exception("delivering events read from the Redis stream failed")
                        expected, self._faulted = None, True
                    last = entries[-1][0].decode()
                    unreported += len(entries)
                    # Sized from what came: 1000 large events would be a gigabyte at once.
                    size = sum(len(v) for _, fields in entries for v in fields.values())
                    count = max(1, min(READ_COUNT, _READ_BYTES * len(entries) // max(size, 1)))

    def _feed(self, entries: Entries, expected: int | None) -> int | None:
        """Hand entries to the sink in order, with a gap notice where the count jumps."""
        batch: list[StoredEvent] = []
        for sid, fields in entries:
            if b"live" in fields:  # a broadcast: delivered, never a resume point
                when = (position_of(sid) >> SEQ_BITS) / 1000
                batch.append(transient(event_of(fields), self.stored_position, when))
                continue
            event = decode(sid, fields)
            self.stored_position = event.position
            n = number(fields)
            if self._faulted:  # the batch before this one failed to deliver: how far, unknown
                self._faulted = False
                if batch and self.sink is not None:
                    self.sink(batch)
                batch = []
                if self.on_gap is not None:
                    self.on_gap(Gap(None, event.id, event))
            elif n is not None and expected is not None and n != expected:
                # n < expected: the counter restarted (Redis lost its data): how many is unknown.
                missed = n - expected if n > expected else None
                log.warning(
                    "this node's reader fell behind the Redis stream: %s events trimmed "
                    "before it read them",
                    "some" if missed is None else missed,
                )
                if batch and self.sink is not None:
                    self.sink(batch)
                batch = []
                if self.on_gap is not None:
                    self.on_gap(Gap(missed, event.id, event))
            if n is not None:
                expected = n + 1
            batch.append(event)
            self.last_id = event.id
        if self.sink is not None:
            self.sink(batch)
        return expected
