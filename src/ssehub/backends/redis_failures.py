"""What a failed Redis command means: refused, never sent (the event is not stored: a 503
the publisher may retry), or sent with no answer (``OutcomeUnknown``: it may be stored);
and, at start, why Redis cannot be used and what to check."""

from __future__ import annotations

import logging
import socket

from redis.asyncio.connection import AbstractConnection
from redis.commands.core import AsyncScript
from redis.exceptions import AuthenticationError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..contract import OutcomeUnknown

log = logging.getLogger("ssehub.redis")


class HandshakeTimeout(RedisTimeoutError):
    """A new connection's handshake (HELLO, SELECT, CLIENT SETINFO) had no answer in time:
    no command of ours went on it."""


async def say_hello(conn: AbstractConnection) -> None:
    """redis-py's handshake on a new connection (its ``redis_connect_func``), its timeout
    told apart: redis-py words it as any read's, which would make a publish that never
    reached Redis an "outcome unknown"."""
    try:
        await conn.on_connect()
    except RedisTimeoutError as exc:
        raise HandshakeTimeout(f"Timeout connecting: no answer to the handshake ({exc})") from exc


def never_sent(exc: BaseException) -> bool:
    """Whether a failure came while connecting, before a command could reach Redis."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(
            seen, HandshakeTimeout | ConnectionRefusedError | socket.gaierror | FileNotFoundError
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    text = str(exc)  # redis-py's own wording for its connect phase
    return text.startswith("Timeout connecting") or " connecting to " in text


async def run_script(script: AsyncScript, keys: list[str], args: list[str | int]) -> object:
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
        if never_sent(exc):
            raise ConnectionError(f"Redis is unavailable: {exc}") from exc
        raise OutcomeUnknown(f"Redis did not answer in time ({exc})") from exc
    except (RedisError, OSError) as exc:
        sent = not never_sent(exc)
        log.info("Redis command failed (%s); reconnecting once", exc)
    try:
        return await script(keys=keys, args=args)
    except ResponseError as exc:
        raise ConnectionError(f"Redis refused the command: {exc}") from exc
    except (RedisError, OSError) as exc:
        if not sent and never_sent(exc):
            raise ConnectionError(f"Redis is unavailable: {exc}") from exc
        raise OutcomeUnknown(f"Redis did not answer ({exc})") from exc


def why_not(where: str, exc: BaseException, with_password: bool) -> str:
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
