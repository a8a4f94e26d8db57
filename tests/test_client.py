"""The async client and the CLI faces, against real hubs."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import jwt
import pytest

from ssehub.client import Gap, HubRefused, publish, subscribe
from ssehub.sse import ServerEvent

from .support import KEY, HubProcess, start_hub

FLAGS = ("--anonymous", "--no-demo", "--heartbeat", "0")


async def take(stream: AsyncIterator[ServerEvent | Gap], count: int) -> list[ServerEvent | Gap]:
    out: list[ServerEvent | Gap] = []
    async with asyncio.timeout(15):
        async for item in stream:
            out.append(item)
            if len(out) == count:
                break
    return out


async def subscribed(hub: HubProcess, total: float) -> None:
    """Wait until the hub has registered ``total`` subscriptions since it started."""
    await asyncio.to_thread(hub.wait_metric, "ssehub_subscriptions_total", total)


def test_publish_and_subscribe(hub: HubProcess) -> None:
    async def go() -> None:
        before = hub.metric("ssehub_subscriptions_total")
        stream = subscribe(hub.url, ["urn:client:{n}"], retry=0.1)
        first = asyncio.ensure_future(take(stream, 2))
        await subscribed(hub, before + 1)
        ids = [
            await publish(
                hub.url,
                f"urn:client:{i}",
                f"d{i}",
                token=hub.publisher_token,
                type="t",
                id=f"c-{i}",
            )
            for i in range(2)
        ]
        got = await first
        assert [(e.id, e.data, e.event) for e in got if isinstance(e, ServerEvent)] == [
            (ids[0], "d0", "t"),
            (ids[1], "d1", "t"),
        ]
        with pytest.raises(HubRefused) as refused:
            await publish(hub.url, "urn:client:x", token="bad")
        assert refused.value.status == 401

    asyncio.run(go())


def test_gap_is_surfaced(fresh_hub: HubProcess) -> None:
    async def go() -> None:
        ids = [
            await publish(fresh_hub.url, "g", str(i), token=fresh_hub.publisher_token)
            for i in range(8)
        ]
        got = await take(subscribe(fresh_hub.url, "g", last_event_id=ids[0]), 6)
        gap = got[0]
        assert isinstance(gap, Gap)
        assert gap.requested == ids[0]
        assert [e.id for e in got[1:] if isinstance(e, ServerEvent)] == ids[3:]

    asyncio.run(go())


def test_client_resumes_across_a_restart_without_loss() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = f"sqlite:{tmp}/events.db"
        hub = start_hub(*FLAGS, "--store", store)
        port = hub.port

        async def go() -> list[str]:
            nonlocal hub
            stream = subscribe(hub.url, "r", retry=0.2)
            received: list[str] = []
            halfway = asyncio.Event()

            async def reader() -> None:
                async for item in stream:
                    assert isinstance(item, ServerEvent)
                    received.append(item.id)
                    if len(received) == 5:
                        halfway.set()
                    if len(received) == 10:
                        return

            task = asyncio.ensure_future(reader())
            await subscribed(hub, 1)
            sent = [
                await publish(hub.url, "r", str(i), token=hub.publisher_token) for i in range(5)
            ]
            async with asyncio.timeout(15):
                await halfway.wait()
            hub.stop()
            # While the hub is down, and on the restarted one before the client is back.
            hub = await asyncio.to_thread(lambda: start_hub(*FLAGS, "--store", store, port=port))
            sent += [
                await publish(hub.url, "r", str(i), token=hub.publisher_token) for i in range(5, 10)
            ]
            async with asyncio.timeout(15):
                await task
            assert received == sent
            return received

        try:
            assert len(asyncio.run(go())) == 10
        finally:
            hub.stop()


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ssehub.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_cli_publish_subscribe_and_token(hub: HubProcess) -> None:
    minted = cli(
        "token",
        "--key",
        KEY,
        "--publish",
        "urn:cli:*",
        "--publish",
        "urn:cli:{x}",
        "--expires-in",
        "600",
        "--claim",
        "sub=tester",
    )
    assert minted.returncode == 0, minted.stderr
    claims = jwt.decode(minted.stdout.strip(), KEY, algorithms=["HS256"])
    assert claims["mercure"] == {"publish": ["urn:cli:*", "urn:cli:{x}"]}
    assert claims["sub"] == "tester"
    before = hub.metric("ssehub_subscriptions_total")
    listener = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ssehub.cli",
            "subscribe",
            "--url",
            hub.url,
            "--topic",
            "urn:cli:{x}",
            "--count",
            "2",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        hub.wait_metric("ssehub_subscriptions_total", before + 1)
        token = minted.stdout.strip()
        first = cli(
            "publish",
            "--url",
            hub.url,
            "--topic",
            "urn:cli:a",
            "--data",
            "one",
            "--token",
            token,
            "--type",
            "note",
        )
        second = cli(
            "publish",
            "--url",
            hub.url,
            "--topic",
            "urn:cli:b",
            "--token",
            token,
            stdin="two\nlines",
        )
        assert first.returncode == 0, first.stderr
        assert second.returncode == 0, second.stderr
        out, _ = listener.communicate(timeout=20)
    finally:
        listener.kill()
    lines = [json.loads(line) for line in out.splitlines()]  # stdin lost its final newline
    assert lines == [
        {"id": first.stdout.strip(), "type": "note", "data": "one"},
        {"id": second.stdout.strip(), "type": "message", "data": "two\nlines"},
    ]
    refused = cli(
        "publish", "--url", hub.url, "--topic", "urn:other", "--data", "x", "--token", token
    )
    assert refused.returncode != 0
    assert "403" in refused.stderr
    assert "urn:other" in refused.stderr


def test_cli_bench_measures_a_real_hub(hub: HubProcess) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = f"{tmp}/bench.json"
        done = cli(
            "bench",
            "--url",
            hub.url,
            "--token",
            hub.publisher_token,
            "--topic",
            "urn:bench:test",
            "--subscribers",
            "20",
            "--rate",
            "200",
            "--duration",
            "1",
            "--warmup",
            "0",
            "--hub-pid",
            str(hub.proc.pid),
            "--json",
            out,
            "--plot",
            f"{tmp}/bench.png",
        )
        assert done.returncode == 0, done.stderr
        [row] = json.loads(Path(out).read_text())
        assert os.path.getsize(f"{tmp}/bench.png") > 10_000
    assert row["published"] > 0  # how many fit in a second depends on the machine's load
    assert row["delivered"] == row["published"] * 20
    assert row["delivery_ratio"] == 1.0
    assert row["latency_ms"]["p50"] > 0  # measured; no bound on a shared machine
    assert row["hub_rss_kib"] > 0
    assert "ratio 1.0000" in done.stdout
