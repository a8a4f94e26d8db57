"""Helpers the benchmark scripts share: ports, /proc readings, starting a pinned hub."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

KEY = "bench-key-0123456789-0123456789-0123456789"
HUB_PATH = "/.well-known/mercure"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def proc_cpu_s(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


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
