"""Helpers the benchmark scripts share: ports, /proc readings, starting a pinned hub."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

from ssehub.bench import proc_cpu_s, rss_kib

__all__ = [
    "HUB_PATH",
    "KEY",
    "SERVE_ARGS",
    "free_port",
    "hub_pids",
    "proc_cpu_s",
    "rss_kib",
    "start_hub",
    "stop_hub",
    "wait_port",
]

KEY = "bench-key-0123456789-0123456789-0123456789"
HUB_PATH = "/.well-known/mercure"
# The hub as every benchmark runs it: no auth for subscribers, no heartbeats, limits out of the way.
SERVE_ARGS = [
    "--anonymous",
    "--no-demo",
    "--heartbeat",
    "0",
    "--history-size",
    "1000",
    "--max-write-buffer",
    str(64 << 20),
    "--max-connections",
    "100000",
    "--max-connections-per-ip",
    "0",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def hub_pids(root: int) -> list[int]:
    children = Path(f"/proc/{root}/task/{root}/children")
    extra = [int(p) for p in children.read_text().split()] if children.exists() else []
    return [root, *extra]


def start_hub(port: int, args: list[str], cpus: str | None) -> subprocess.Popen[bytes]:
    """``ssehub serve`` from this virtualenv on ``port``, pinned to ``cpus`` with taskset."""
    exe = Path(sys.executable).with_name("ssehub")
    cmd = [str(exe), "serve", "--port", str(port), "--jwt-key", KEY, *args]
    if cpus is not None:
        cmd = ["taskset", "-c", cpus, *cmd]
    hub = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, hub)
    return hub


def wait_port(port: int, proc: subprocess.Popen[bytes], seconds: float = 15) -> None:
    """Return once ``port`` accepts; kill ``proc`` and raise if it exits or never listens."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{proc.args!r} did not start listening on {port}")


def stop_hub(hub: subprocess.Popen[bytes]) -> None:
    hub.terminate()
    try:
        hub.wait(15)
    except subprocess.TimeoutExpired:
        hub.kill()
