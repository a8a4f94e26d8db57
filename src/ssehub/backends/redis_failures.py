"""What a failed Redis command means: refused, never sent (the event is not stored: a 503
the publisher may retry), or sent with no answer (``OutcomeUnknown``: it may be stored);
and, at start, why Redis cannot be used and what to check."""

from __future__ import annotations

import logging
import socket

from redis.asyncio.connection import AbstractConnection
from redis.commands.core import AsyncScript
from redis.exceptions import AuthenticationError, NoScriptError, RedisError, ResponseError
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


class LoadFailed(RedisError):
    """Loading a script Redis had lost failed: the command it was for was not sent."""


class LoadTimeout(LoadFailed, RedisTimeoutError):
    """Loading a script had no answer in time: Redis is there but slow, so not retried."""


async def _evaluate(script: AsyncScript, keys: list[str], args: list[str | int]) -> object:
    """EVALSHA, loading the script first when Redis has lost it (a restart, a failover,
    SCRIPT FLUSH). redis-py's own ``Script`` does the same, but a load without an answer
    then reads as the script's, which would make an append never sent "outcome unknown"."""
    client = script.registered_client
    try:
        return await client.evalsha(script.sha, len(keys), *keys, *args)
    except NoScriptError:
        pass  # Redis answered that it does not know the script: it ran nothing
    try:
        script.sha = await client.script_load(script.script)
    except RedisTimeoutError as exc:
        raise LoadTimeout(f"no answer while loading a script ({exc})") from exc
    except (RedisError, OSError) as exc:
        raise LoadFailed(f"loading a script failed ({exc})") from exc
    return await client.evalsha(script.sha, len(keys), *keys, *args)


def never_sent(exc: BaseException) -> bool:
    """Whether a failure came before the command could reach Redis: while connecting, or
    while loading the script it runs."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(
            seen,
            HandshakeTimeout
            | LoadFailed
            | ConnectionRefusedError
            | socket.gaierror
            | FileNotFoundError,
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
        return await _evaluate(script, keys, args)
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
        return await _evaluate(script, keys, args)
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
