"""The floor under any fan-out over HTTP/1.1: what one ``write()`` to a loopback TCP socket
costs, with a reader draining every socket on the other core. A pass writes each subscriber
once, so a pass over N sockets cannot take less than N times this, and neither can the
latency of the event that waits for it. No hub, no event loop: raw ``os.write`` calls.

    python benchmarks/write_floor.py [--sockets 1000] [--seconds 3] [--payload 150] [--json]

On this VM the cost is the kernel's TCP work, not the call: a ``write()`` to /dev/null costs
~0.3 us against ~5 us to a loopback socket (whose receive path runs on the writer's core too),
so batching the calls (``io_uring``, a C loop) would save a few per cent of it at most.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import select
import socket
import time


def drain(port: int, count: int, cpu: int) -> None:
    """The other side: ``count`` connections read as fast as they fill (epoll, one core)."""
    os.sched_setaffinity(0, {cpu})
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
    poller = select.epoll()
    by_fd = {}
    for sock in socks:
        sock.setblocking(False)
        poller.register(sock.fileno(), select.EPOLLIN)
        by_fd[sock.fileno()] = sock
    buffer = bytearray(1 << 16)
    while True:
        for fd, _ in poller.poll():
            try:
                if by_fd[fd].recv_into(buffer) == 0:
                    return
            except BlockingIOError:
                continue


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--payload", type=int, default=150, help="bytes per write")
    parser.add_argument("--writer-cpu", type=int, default=0)
    parser.add_argument("--reader-cpu", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    port = listener.getsockname()[1]
    child = os.fork()
    if child == 0:
        try:
            drain(port, args.sockets, args.reader_cpu)
        finally:
            os._exit(0)
    os.sched_setaffinity(0, {args.writer_cpu})
    conns = [listener.accept()[0] for _ in range(args.sockets)]
    for conn in conns:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    fds = [conn.fileno() for conn in conns]
    data = b"x" * args.payload
    passes, spent = 0, 0.0
    ends = time.monotonic() + args.seconds
    while time.monotonic() < ends:
        started = time.perf_counter()
        for fd in fds:
            os.write(fd, data)
        spent += time.perf_counter() - started
        passes += 1
        time.sleep(0.002)  # the reader catches up: every pass finds empty socket buffers
    for conn in conns:
        conn.close()
    os.waitpid(child, 0)
    per_write = spent / passes / len(fds)
    if args.json:
        print(
            json.dumps({"sockets": args.sockets, "passes": passes, "us_per_write": per_write * 1e6})
        )
        return
    print(
        f"{args.sockets} sockets: {passes} passes, {spent / passes * 1e3:.2f} ms per pass,"
        f" {per_write * 1e6:.2f} us per write()"
    )


if __name__ == "__main__":
    main()
