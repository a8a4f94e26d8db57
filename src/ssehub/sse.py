"""The Server-Sent Events wire format (HTML Living Standard §9.2), sans-I/O."""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

HEARTBEAT = b":\n"
_LINE_ENDS = re.compile(r"\r\n|\r|\n")


def normalize_newlines(text: str) -> str:
    """CRLF and lone CR become LF, as an event-stream parser sees them."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def encode_event(
    data: str, *, id: str | None = None, event: str | None = None, retry: int | None = None
) -> bytes:
    """One complete event; every line of ``data`` gets its own ``data: `` line."""
    head = ""
    if id is not None:
        if "\n" in id or "\r" in id or "\x00" in id:
            raise ValueError("an event id must not contain CR, LF or NUL")
        head = f"id: {id}\n"
    if event is not None:
        if "\n" in event or "\r" in event:
            raise ValueError("an event type must not contain CR or LF")
        head += f"event: {event}\n"
    if retry is not None:
        if retry < 0:
            raise ValueError("retry must be >= 0")
        head += f"retry: {retry}\n"
    if "\n" in data or "\r" in data:
        body = "".join(f"data: {line}\n" for line in _LINE_ENDS.split(data))
    else:
        body = f"data: {data}\n"
    return f"{head}{body}\n".encode()


def encode_comment(text: str = "") -> bytes:
    """A comment block; each line of ``text`` becomes its own comment line."""
    if not text:
        return HEARTBEAT
    return "".join(f": {line}\n" for line in _LINE_ENDS.split(text)).encode()


@dataclass(frozen=True, slots=True)
class ServerEvent:
    """A dispatched event, as an EventSource would see it."""

    data: str
    event: str = "message"
    id: str = ""
    retry: int | None = None


class Decoder:
    """Incremental event-stream parser: feed bytes in any chunking, get dispatched events."""

    def __init__(self, max_line: int = 1 << 20, max_event: int = 8 << 20) -> None:
        self.max_line = max_line
        self.max_event = max_event
        self.retry: int | None = None
        self.last_event_id = ""
        self.comments_seen = 0
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._started = False
        self._line = ""
        self._skip_lf = False
        self._data: list[str] = []
        self._data_size = 0
        self._type = ""
        self._id_buffer = ""
        self._retry_seen: int | None = None

    def feed(self, chunk: bytes) -> list[ServerEvent]:
        """Parse ``chunk``; return the events it completes."""
        text = self._utf8.decode(chunk)
        if not text:
            return []  # e.g. half of a multi-byte character
        if not self._started:
            self._started = True
            if text[0] == "\ufeff":
                text = text[1:]
        events: list[ServerEvent] = []
        if self._skip_lf and text.startswith("\n"):
            text = text[1:]
        self._skip_lf = False
        pos = 0
        for match in _LINE_ENDS.finditer(text):
            line = text[pos : match.start()]
            if self._line:
                line, self._line = self._line + line, ""
            pos = match.end()
            self._process(line, events)
        rest = text[pos:]
        if text.endswith("\r"):
            # A CR ends a line now; a LF that opens the next chunk belongs to it.
            self._skip_lf = True
        self._line += rest
        if len(self._line) > self.max_line:
            raise ValueError(f"event-stream line longer than {self.max_line} characters")
        return events

    def _process(self, line: str, events: list[ServerEvent]) -> None:
        if not line:
            self._dispatch(events)
            return
        if line[0] == ":":
            self.comments_seen += 1
            return
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._data_size += len(value) + 1
            if self._data_size > self.max_event:
                raise ValueError(f"event data larger than {self.max_event} characters")
        elif name == "event":
            self._type = value
        elif name == "id":
            if "\x00" not in value:
                self._id_buffer = value
        elif name == "retry" and value and value.isascii() and value.isdigit():
            self.retry = self._retry_seen = int(value)

    def _dispatch(self, events: list[ServerEvent]) -> None:
        self.last_event_id = self._id_buffer
        if not self._data:
            self._type = ""
            return
        events.append(
            ServerEvent(
                "\n".join(self._data), self._type or "message", self.last_event_id, self._retry_seen
            )
        )
        self._data, self._data_size, self._type, self._retry_seen = [], 0, "", None
