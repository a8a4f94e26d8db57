"""ssehub against its peers, the same workloads one after the other, in one run.

Servers: ssehub with the memory store over HTTP/1.1 and over HTTP/2 (h2c), with SQLite and with
Redis; nginx + nchan (C); Node's http + EventEmitter (the classic tutorial server) and
sse-starlette under uvicorn with a queue per subscriber (both hold 19,500 subscribers, far
behind). Each server runs pinned to CPU 0 and is started afresh for every row; the load
(``ssehub.bench``) runs pinned to CPU 1. It installs what is missing (Debian's nginx-light and
libnginx-mod-nchan, Node), keeps every row in a JSON file (a rerun replaces just its rows) and
writes the table and the latency CDF charts into docs/benchmarks.md (between the PEERS markers)
and docs/img/.

    python benchmarks/peers.py [--duration 8] [--servers ssehub,nchan] [--workloads 1k-1000]
    python benchmarks/peers.py --from-json docs/data/peers.json   # rewrite the docs only
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import jwt
import redis
import uvloop
from _common import KEY, SERVE_ARGS, free_port, hub_pids, start_hub, stop_hub, wait_port
from _peers_report import (
    ROOT,
    SERVERS,
    SSEHUB,
    WORKLOAD,
    WORKLOADS,
    Floor,
    Row,
    Workload,
    load_floors,
    load_rows,
    quantiles,
    save_rows,
    write_docs,
)

from ssehub import bench

HERE = Path(__file__).resolve().parent / "peers"
NCHAN_MODULE = "/usr/lib/nginx/modules/ngx_nchan_module.so"
SERVER_CPU, LOAD_CPU = 0, 1
REDIS_DB = 11  # a database the tests do not use; keys carry a prefix unique to the row


@dataclass
class Running:
    """A started server: its process, where the load goes, and what to undo afterwards."""

    proc: subprocess.Popen[bytes]
    target: bench.Target
    cleanup: Callable[[], None] = lambda: None
    redis_pid: int | None = None
    log: Path | None = None  # the server's error log, quoted when a run fails
    pids: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.pids = self.target.hub_pids


def ensure_installed() -> None:
    missing = []
    if not shutil.which("nginx") or not Path(NCHAN_MODULE).exists():
        missing += ["nginx-light", "libnginx-mod-nchan"]
    if not shutil.which("node"):
        missing.append("nodejs")
    if missing:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env)
        # Where the package starts its own nginx, stop that one (by its pid file) so it does not
        # share the CPUs; ours run from their own config.
        pid_file = Path("/run/nginx.pid")
        if pid_file.exists():
            subprocess.run(["nginx", "-s", "stop"], check=False)


def _ssehub(port: int, extra: list[str]) -> tuple[subprocess.Popen[bytes], bench.Target]:
    hub = start_hub(port, [*SERVE_ARGS, *extra], str(SERVER_CPU))
    token = jwt.encode({"mercure": {"publish": ["*"]}}, KEY, algorithm="HS256")
    target = bench.Target.mercure(
        f"http://127.0.0.1:{port}/.well-known/mercure",
        "urn:bench:peers",
        token,
        tuple(hub_pids(hub.pid)),
    )
    return hub, target


def start_ssehub(port: int, tmp: Path) -> Running:
    return Running(*_ssehub(port, []))


def start_ssehub_h2(port: int, tmp: Path) -> Running:
    return Running(*_ssehub(port, ["--http2"]))


def start_ssehub_sqlite(port: int, tmp: Path, extra: tuple[str, ...] = ()) -> Running:
    return Running(*_ssehub(port, ["--store", f"sqlite:{tmp / 'hub.db'}", *extra]))


def start_ssehub_redis(port: int, tmp: Path, extra: tuple[str, ...] = ()) -> Running:
    prefix = f"ssehub-peers-{os.getpid()}-{port}"
    client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    server_pid = int(client.info("server")["process_id"])

    def cleanup() -> None:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()

    store = f"redis://127.0.0.1:6379/{REDIS_DB}?prefix={prefix}"
    try:
        hub, target = _ssehub(port, ["--store", store, *extra])
    except BaseException:
        cleanup()
        raise
    local = Path(f"/proc/{server_pid}").exists()  # its CPU is readable when it runs here
    return Running(hub, target, cleanup, server_pid if local else None)


def start_nchan(port: int, tmp: Path) -> Running:
    # One worker (one core, as every server here). 19,500 subscribers need as many descriptors:
    # the worker gets all this process may have (it cannot raise its hard limit in a container:
    # setrlimit fails). Connection slots are not descriptors: with 19,968 slots nchan ran out
    # at 19,500 subscribers ("worker_connections are not enough, reusing connections", closing
    # subscribers), so there are twice as many. multi_accept takes every pending connection per
    # wakeup, as ssehub's accept loop does.
    _, nofile = resource.getrlimit(resource.RLIMIT_NOFILE)
    conf = tmp / "nginx.conf"
    conf.write_text(f"""
load_module {NCHAN_MODULE};
worker_processes 1;
worker_rlimit_nofile {nofile};
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections {2 * nofile}; multi_accept on; }}
http {{
  access_log off;
  keepalive_requests 10000000;  # the default (1000) would close our publisher connections
  client_body_temp_path {tmp}/body;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location = /sub {{ nchan_subscriber eventsource; nchan_channel_id bench; }}
    location = /pub {{ nchan_publisher; nchan_channel_id bench;
                       nchan_message_buffer_length 1000; }}
  }}
}}
""")
    proc = subprocess.Popen(
        ["taskset", "-c", str(SERVER_CPU), "nginx", "-c", str(conf), "-p", str(tmp)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_port(port, proc)
    deadline = time.monotonic() + 5  # the master listens before it forks the worker
    while len(pids := hub_pids(proc.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    base = f"http://127.0.0.1:{port}"
    target = bench.Target.raw(f"{base}/sub", f"{base}/pub", tuple(pids))
    return Running(proc, target, log=tmp / "error.log")


def _pinned(cmd: list[str], port: int) -> Running:
    proc = subprocess.Popen(
        ["taskset", "-c", str(SERVER_CPU), *cmd, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_port(port, proc)
    base = f"http://127.0.0.1:{port}"
    return Running(proc, bench.Target.raw(f"{base}/events", f"{base}/publish", (proc.pid,)))


def start_node(port: int, tmp: Path) -> Running:
    return _pinned(["node", str(HERE / "node_server.js")], port)


def start_starlette(port: int, tmp: Path) -> Running:
    return _pinned([sys.executable, str(HERE / "starlette_server.py")], port)


STARTS: dict[str, tuple[Callable[[int, Path], Running], str]] = {  # key: (start, subscribers' HTTP)
    "ssehub": (start_ssehub, "1.1"),
    "ssehub-h2": (start_ssehub_h2, "2"),
    "ssehub-sqlite": (start_ssehub_sqlite, "1.1"),
    "ssehub-sqlite-h2": (lambda port, tmp: start_ssehub_sqlite(port, tmp, ("--http2",)), "2"),
    "ssehub-redis": (start_ssehub_redis, "1.1"),
    "ssehub-redis-h2": (lambda port, tmp: start_ssehub_redis(port, tmp, ("--http2",)), "2"),
    "nchan": (start_nchan, "1.1"),
    "node": (start_node, "1.1"),
    "starlette": (start_starlette, "1.1"),
}


# -- measuring -----------------------------------------------------------------------------------


def _children(exclude: set[int]) -> list[int]:
    """This process's children (the load's subscriber processes), but not the server."""
    pids = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            pids += [int(p) for p in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
    return [p for p in pids if p not in exclude]


class Phases:
    """``bench.run``'s progress callback: the time and CPU readings where each phase began."""

    def __init__(self, server: Running) -> None:
        self.server = server
        self.load: list[int] = []
        self.marks: dict[str, tuple[float, float, float, float]] = {}
        self.order: list[str] = []

    def __call__(self, phase: str, fraction: float) -> None:
        if phase in self.marks:
            return
        if phase == "connecting":  # the subscriber processes exist by now
            self.load = _children({self.server.proc.pid})
        redis_pid = self.server.redis_pid
        self.marks[phase] = (
            time.monotonic(),
            bench.proc_cpu_s(self.server.pids),
            bench.proc_cpu_s(self.load),
            bench.proc_cpu_s([redis_pid]) if redis_pid else 0.0,
        )
        self.order.append(phase)

    def span(self, phase: str) -> tuple[float, float, float, float]:
        """Seconds, then server, load and Redis CPU % over ``phase`` (to the next one)."""
        start = self.marks[phase]
        at = self.order.index(phase)
        end = self.marks[self.order[at + 1]] if at + 1 < len(self.order) else None
        if end is None:
            return (0.0, 0.0, 0.0, 0.0)
        seconds = end[0] - start[0]
        pct = [100 * (b - a) / seconds for a, b in zip(start[1:], end[1:], strict=True)]
        return (seconds, pct[0], pct[1], pct[2])


def _options(args: argparse.Namespace, workload: Workload, http: str) -> bench.Options:
    return bench.Options(
        subscribers=workload.subscribers,
        client_procs=args.client_procs,
        rate=workload.rate,
        window=workload.window or args.window,
        conns=workload.conns or args.conns,
        payload=100,
        duration=min(args.duration, 2.0) if workload.idle else args.duration,
        warmup=0.0 if workload.idle else args.warmup,
        load_cpu=LOAD_CPU,
        http=http,
        streams=100,
        reader=args.reader,
    )


def measure(args: argparse.Namespace, server: str, workload: Workload, meta: dict[str, str]) -> Row:
    start, http = STARTS[server]
    options = _options(args, workload, http)
    loadavg = " / ".join(Path("/proc/loadavg").read_text().split()[:3])
    with tempfile.TemporaryDirectory() as tmp:
        running = start(free_port(), Path(tmp))
        try:
            rss_before = bench.rss_kib(running.pids)
            phases = Phases(running)
            result = uvloop.run(bench.run(running.target, options, phases))
        except bench.BenchError as exc:
            if running.log is not None and running.log.exists():
                tail = running.log.read_text().splitlines()[-5:]
                raise bench.BenchError("\n".join([str(exc), *tail])) from exc
            raise
        finally:
            stop_hub(running.proc)
            running.cleanup()
    connect_s, connect_server, connect_load, _ = phases.span("connecting")
    redis_cpu = phases.span("measuring")[3] if running.redis_pid else None
    cdf = quantiles(result.latency_samples)
    result.latency_samples = []
    return Row(
        server=server,
        workload=workload.key,
        result=result,
        cdf=cdf,
        rss_before_kib=rss_before,
        connect_s=connect_s,
        connect_server_cpu_pct=connect_server,
        connect_load_cpu_pct=connect_load,
        redis_cpu_pct=redis_cpu,
        reader=result.reader + (f" ({result.reader_note})" if result.reader_note else ""),
        when=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        loadavg=loadavg,
        command=meta["command"],
        options=dataclasses.asdict(options),
        machine={k: v for k, v in meta.items() if k != "command"},
    )


def measure_floor(sockets: int, seconds: float) -> Floor:
    """``write_floor.py`` pinned like the servers: raw writes on CPU 0, the reader on CPU 1."""
    done = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).with_name("write_floor.py")),
            f"--sockets={sockets}",
            f"--seconds={seconds}",
            f"--writer-cpu={SERVER_CPU}",
            f"--reader-cpu={LOAD_CPU}",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    measured = json.loads(done.stdout)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return Floor(sockets, round(measured["us_per_write"], 3), when)


def machine() -> dict[str, str]:
    """What the docs say about the machine and the software measured."""

    def first(cmd: list[str]) -> str:
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return "?"
        return (done.stdout or done.stderr).strip().splitlines()[0] if done.returncode == 0 else "?"

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    mem = Path("/proc/meminfo").read_text().split()[1]
    os_name = next(
        (
            line.split("=", 1)[1].strip('"')
            for line in Path("/etc/os-release").read_text().splitlines()
            if line.startswith("PRETTY_NAME=")
        ),
        "?",
    )
    try:
        info = redis.Redis(host="127.0.0.1", port=6379).info("server")
        redis_version = str(info["redis_version"])
    except redis.RedisError:
        redis_version = "?"
    return {
        "CPU": f"{os.cpu_count()} x {cpu}",
        "memory": f"{int(mem) / 1024**2:.0f} GiB",
        "OS": f"{os_name}, Linux {platform.release()}",
        "Python": platform.python_version(),
        "ssehub": first(["git", "-C", str(ROOT), "describe", "--always", "--dirty"]),
        "nginx": first(["nginx", "-v"]).removeprefix("nginx version: nginx/"),
        "nchan": first(["dpkg-query", "-W", "-f", "${Version}", "libnginx-mod-nchan"]),
        "Node": first(["node", "--version"]),
        "Redis": redis_version,
    }


def _keys(value: str, known: dict[str, object]) -> list[str]:
    keys = [k.strip() for k in value.split(",") if k.strip()]
    unknown = [k for k in keys if k not in known]
    if unknown:
        choices = ", ".join(known)
        raise argparse.ArgumentTypeError(f"unknown: {', '.join(unknown)} (known: {choices})")
    return keys


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per row")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument(
        "--servers",
        type=lambda v: _keys(v, dict(SERVERS)),
        help="comma-separated, of: " + ", ".join(SERVERS),
    )
    parser.add_argument(
        "--workloads",
        type=lambda v: _keys(v, dict(WORKLOAD)),
        help="comma-separated, of: " + ", ".join(WORKLOAD),
    )
    parser.add_argument("--client-procs", type=int, default=1, help="subscriber processes")
    parser.add_argument(
        "--window", type=int, default=64, help="publishes in flight per connection (max rate)"
    )
    parser.add_argument("--conns", type=int, default=4, help="publisher connections")
    parser.add_argument(
        "--reader",
        choices=["auto", "c", "python"],
        default="auto",
        help="the load's subscriber reader: C, Python, or C when it builds",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=ROOT / "docs" / "data" / "peers.json",
        help="where rows are kept; a rerun replaces its own rows",
    )
    parser.add_argument("--from-json", type=Path, help="only rewrite the docs from this file")
    parser.add_argument("--no-docs", action="store_true", help="measure and keep, not rewrite docs")
    parser.add_argument(
        "--no-floor",
        action="store_true",
        help="skip write_floor.py at the latency workloads' subscriber counts",
    )
    args = parser.parse_args()
    if args.from_json:
        write_docs(list(load_rows(args.from_json).values()), load_floors(args.from_json))
        return
    ensure_installed()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.sched_setaffinity(0, {LOAD_CPU})
    meta = {
        "command": "python benchmarks/peers.py " + shlex.join(sys.argv[1:]),
        **machine(),
    }
    servers = args.servers or list(SERVERS)
    workloads = [WORKLOAD[k] for k in args.workloads] if args.workloads else list(WORKLOADS)
    rows, floors = load_rows(args.json), load_floors(args.json)
    if not args.no_floor and any(s in SSEHUB for s in servers):
        for count in sorted({w.subscribers for w in workloads if w.target and not w.idle}):
            floors[count] = floor = measure_floor(count, min(args.duration, 3.0))
            print(f"== floor: {count:,} sockets, {floor.us_per_write:.2f} us per write()")
    for workload in workloads:
        for server in servers:
            print(f"== {SERVERS[server]}: {workload.title}", flush=True)
            try:
                row = measure(args, server, workload, meta)
            except bench.BenchError as exc:
                print(f"   failed: {exc}", flush=True)
                continue
            print(bench.report(row.result), flush=True)
            redis_cpu = row.redis_cpu_pct
            print(
                f"  connect     {row.connect_s:.2f} s, server cpu {row.connect_server_cpu_pct:.0f}%"
                f", load cpu {row.connect_load_cpu_pct:.0f}%; rss added "
                f"{row.rss_delta_per_sub:,.0f} B/subscriber"
                + (f"; redis cpu {redis_cpu:.0f}%" if redis_cpu is not None else ""),
                flush=True,
            )
            rows[server, workload.key] = row
            save_rows(
                args.json, rows, floors
            )  # after every row: an interrupted run keeps what it measured
    if not args.no_docs:
        write_docs(list(rows.values()), floors)


if __name__ == "__main__":
    main()
