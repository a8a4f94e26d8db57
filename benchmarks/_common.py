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
    "free_port",
    "hub_pids",
    "proc_cpu_s",
    "rss_kib",
    "start_hub",
    "stop_hub",
]

KEY = "bench-key-0123456789-0123456789-0123456789"
HUB_PATH = "/.well-known/mercure"


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
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return hub
        except OSError:
            time.sleep(0.05)
    hub.kill()
    raise RuntimeError("the hub did not start")


def stop_hub(hub: subprocess.Popen[bytes]) -> None:
    hub.terminate()
    try:
        hub.wait(15)
    except subprocess.TimeoutExpired:
        hub.kill()
