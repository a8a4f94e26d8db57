"""Publishers for application code: a hub URL and a key or token once, then ``publish()``.

    hub = Publisher("http://hub:8000/.well-known/mercure", key=SECRET)
    hub.publish("https://example.com/books/1", {"title": "Dune"})

:class:`Publisher` is for sync code (Django views, Flask handlers, Celery tasks) on one
``httpx.Client``; :class:`AsyncPublisher` is the same on ``httpx.AsyncClient``. Both keep their
connection open between publishes, mint short-lived tokens from a key (and mint again before
they expire), send data that is not a string as JSON, and retry a connection failure or a
502/503/504 with the same event id, so that a retry never makes a second event.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Generic, Self, TypeVar
from urllib.parse import urlencode

import httpx

from .auth import mint_token
from .errors import HubClientError, HubRefused, HubUnavailable

log = logging.getLogger("ssehub.publisher")

_clock = time.time  # the tokens' clock (exp); a name of its own so tests can move it
_Client = TypeVar("_Client", httpx.Client, httpx.AsyncClient)
_RETRIED_STATUSES = frozenset({502, 503, 504})
# Failures after which the hub may or may not have the event: the same id makes a retry safe.
_RETRIED_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


@dataclass(frozen=True, slots=True)
class Retries:
    """How a publish is retried after a connection error or a 502/503/504 answer.

    At most ``attempts`` in all, the first included; ``backoff`` seconds before the second,
    doubling up to ``max_backoff`` (each with jitter, or the hub's ``Retry-After``); no attempt
    starts later than ``deadline`` seconds after the first.
    """

    attempts: int = 4
    backoff: float = 0.2
    max_backoff: float = 2.0
    deadline: float = 10.0

    def delay(self, failed: int, retry_after: float | None = None) -> float:
        """Seconds to wait after ``failed`` failed attempts."""
        if retry_after is not None:
            return retry_after
        base: float = min(self.max_backoff, self.backoff * 2.0 ** (failed - 1))
        return base * random.uniform(0.5, 1.0)  # spread publishers that failed together


NO_RETRIES = Retries(attempts=1)


def form_body(
    topics: str | Sequence[str],
    data: str,
    *,
    private: bool = False,
    id: str | None = None,
    type: str | None = None,
    retry: int | None = None,
) -> bytes:
    """The ``application/x-www-form-urlencoded`` body of one Mercure update."""
    form: list[tuple[str, str]] = [
        ("topic", t) for t in ([topics] if isinstance(topics, str) else topics)
    ]
    form.append(("data", data))
    if private:
        form.append(("private", "on"))
    for name, value in (("id", id), ("type", type), ("retry", retry)):
        if value is not None:
            form.append((name, str(value)))
    return urlencode(form).encode()


def answer_id(answer: httpx.Response) -> str:
    """The id in a 2xx answer; :class:`HubRefused` for a 4xx, :class:`HubUnavailable` else."""
    reason = answer.text.strip() or answer.reason_phrase
    if 400 <= answer.status_code < 500:
        raise HubRefused(answer.status_code, reason)
    if not answer.is_success:
        raise HubUnavailable(answer.status_code, reason)
    return answer.text


def compact_json(data: object) -> str:
    """``data`` as JSON without spaces, non-ASCII kept as is."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


class _Token:
    """A fixed token, or one minted from a key and minted again before it expires."""

    def __init__(
        self,
        key: str | None,
        token: str | None,
        algorithm: str,
        selectors: Sequence[str],
        lifetime: float,
        claims: Mapping[str, object] | None,
    ) -> None:
        if (key is None) == (token is None):
            raise ValueError("give either a key (to mint tokens) or a token")
        self._key = key
        self._fixed = token
        self._algorithm = algorithm
        self._selectors = tuple(selectors)
        self._lifetime = lifetime
        self._claims = dict(claims or {})
        self._minted: tuple[str, float] | None = None  # the token and when to mint again

    def current(self) -> str:
        if self._fixed is not None:
            return self._fixed
        now = _clock()
        minted = self._minted  # one read: other threads may replace it meanwhile
        if minted is None or now >= minted[1]:
            assert self._key is not None
            token = mint_token(
                self._key,
                publish=self._selectors,
                algorithm=self._algorithm,
                claims={"exp": int(now + self._lifetime), **self._claims},
            )
            # Mint again with a margin, so a token never expires between minting and verifying.
            minted = (token, now + self._lifetime - min(60.0, self._lifetime / 2))
            self._minted = minted
        return minted[0]


@dataclass(frozen=True, slots=True)
class _Send:
    body: bytes
    headers: dict[str, str]


class _Publishing(Generic[_Client]):
    """What both publishers share: the update's body, the token, and the retry decisions,
    as a generator that yields a request to send or seconds to sleep (sans-I/O).

    ``key`` mints tokens (``mercure.publish`` = ``selectors``, valid ``token_lifetime``
    seconds, plus ``claims``); ``token`` is used as given. ``client`` is an httpx client to
    use instead of one of the publisher's own.
    """

    def __init__(
        self,
        url: str,
        *,
        key: str | None = None,
        token: str | None = None,
        algorithm: str = "HS256",
        selectors: Sequence[str] = ("*",),
        token_lifetime: float = 3600.0,
        claims: Mapping[str, object] | None = None,
        retries: Retries = Retries(),
        timeout: float = 10.0,
        dumps: Callable[[object], str] = compact_json,
        client: _Client | None = None,
    ) -> None:
        self.url = url
        self.retries = retries
        self.timeout = timeout
        self._token = _Token(key, token, algorithm, selectors, token_lifetime, claims)
        self._dumps = dumps
        self._own = client is None
        self._client: _Client | None = client
        self._pid = os.getpid()
        self._opening = threading.Lock()

    def _exchange(
        self,
        topic: str | Sequence[str],
        data: object,
        private: bool,
        id: str | None,
        type: str | None,
        retry: int | None,
    ) -> Generator[_Send | float, httpx.Response | Exception | None, str]:
        if isinstance(data, bytes | bytearray):
            text = bytes(data).decode("utf-8")
        else:
            text = data if isinstance(data, str) else self._dumps(data)
        # Made before the first attempt and sent with every one: a hub that got the event
        # but whose answer was lost recognises the retry instead of storing it twice.
        if id is None and self.retries.attempts > 1:
            id = f"urn:uuid:{uuid.uuid4()}"
        body = form_body(topic, text, private=private, id=id, type=type, retry=retry)
        started = time.monotonic()
        failed = 0
        while True:
            headers = {
                "Authorization": f"Bearer {self._token.current()}",
                "Content-Type": "application/x-www-form-urlencoded",
            }
            outcome = yield _Send(body, headers)
            retry_after = None
            if isinstance(outcome, httpx.Response):
                if outcome.status_code not in _RETRIED_STATUSES:
                    return answer_id(outcome)
                problem = f"{outcome.status_code} {outcome.text.strip() or outcome.reason_phrase}"
                retry_after = _seconds(outcome.headers.get("retry-after"))
            elif isinstance(outcome, _RETRIED_ERRORS):
                problem = f"{outcome.__class__.__name__}: {outcome}"
            elif isinstance(outcome, httpx.HTTPError):
                raise HubUnavailable(
                    None, f"could not publish to {self.url}: {outcome}"
                ) from outcome
            else:
                raise AssertionError(f"unexpected outcome {outcome!r}")
            failed += 1
            delay = self.retries.delay(failed, retry_after)
            if (
                failed >= self.retries.attempts
                or time.monotonic() + delay - started > self.retries.deadline
            ):
                reason = f"{problem} (gave up after {failed} attempts to reach {self.url})"
                if isinstance(outcome, httpx.Response):
                    raise HubUnavailable(outcome.status_code, reason)
                raise HubUnavailable(None, reason) from outcome
            log.warning(
                "publish %s to %s failed (%s); retrying in %.2fs", id, topic, problem, delay
            )
            if delay > 0:
                yield float(delay)


def _seconds(header: str | None) -> float | None:
    """A ``Retry-After`` given in seconds (an HTTP date is ignored: the backoff applies)."""
    if header is None or not header.strip().isdigit():
        return None
    return float(header.strip())


class Publisher(_Publishing[httpx.Client]):
    """Publishes from sync code; one instance per process, shared by its threads.

    A process forked after use (Celery's prefork pool, gunicorn ``--preload``) opens its own
    connection instead of sharing the parent's socket.
    """

    def _http(self) -> httpx.Client:
        client = self._client
        if self._own and (client is None or self._pid != os.getpid()):
            with self._opening:  # threads share one client: httpx's is thread-safe
                if self._client is None or self._pid != os.getpid():
                    # After a fork the parent's pooled socket is not ours to use or close.
                    self._client = httpx.Client(timeout=self.timeout)
                    self._pid = os.getpid()
                client = self._client
        assert client is not None
        return client

    def publish(
        self,
        topic: str | Sequence[str],
        data: object = "",
        *,
        private: bool = False,
        id: str | None = None,
        type: str | None = None,
        retry: int | None = None,
    ) -> str:
        """Publish one update and return its id.

        ``topic`` is one topic or several (the first canonical); ``data`` a string as is,
        bytes as UTF-8, anything else as JSON. Raises :class:`HubRefused` on a 4xx and
        :class:`HubUnavailable` when every attempt failed.
        """
        steps = self._exchange(topic, data, private, id, type, retry)
        outcome: httpx.Response | Exception | None = None
        try:
            while True:
                step = steps.send(outcome)
                if isinstance(step, float):
                    time.sleep(step)
                    outcome = None
                    continue
                try:
                    outcome = self._http().post(self.url, content=step.body, headers=step.headers)
                except httpx.HTTPError as exc:
                    outcome = exc
        except StopIteration as done:
            return str(done.value)

    def close(self) -> None:
        """Close the connection (only one this publisher opened)."""
        if self._own and self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncPublisher(_Publishing[httpx.AsyncClient]):
    """Publishes from async code; the same arguments as :class:`Publisher`.

    Its connection belongs to the event loop of its first publish: make one per loop (an
    app's lifespan), not one per ``asyncio.run``.
    """

    async def publish(
        self,
        topic: str | Sequence[str],
        data: object = "",
        *,
        private: bool = False,
        id: str | None = None,
        type: str | None = None,
        retry: int | None = None,
    ) -> str:
        """Publish one update and return its id (see :meth:`Publisher.publish`)."""
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout)
        steps = self._exchange(topic, data, private, id, type, retry)
        outcome: httpx.Response | Exception | None = None
        try:
            while True:
                step = steps.send(outcome)
                if isinstance(step, float):
                    await asyncio.sleep(step)
                    outcome = None
                    continue
                try:
                    outcome = await self._client.post(
                        self.url, content=step.body, headers=step.headers
                    )
                except httpx.HTTPError as exc:
                    outcome = exc
        except StopIteration as done:
            return str(done.value)

    async def aclose(self) -> None:
        """Close the connection (only one this publisher opened)."""
        if self._own and self._client is not None:
            await self._client.aclose()
            self._client = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


__all__ = [
    "NO_RETRIES",
    "AsyncPublisher",
    "HubClientError",
    "HubRefused",
    "HubUnavailable",
    "Publisher",
    "Retries",
    "answer_id",
    "compact_json",
    "form_body",
]
