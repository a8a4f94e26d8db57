"""The C subscriber reader (``reader.c``, shipped with the package): built on first use with the
system's C compiler (``$CC``, else ``cc``) into ``~/.cache/ssehub`` (``$XDG_CACHE_HOME``), keyed
by a hash of the source, compiler and flags; then one process per share of subscribers, driven
over stdin/stdout with the commands the Python reader answers on its pipe.

One epoll loop in C reads a socket for ~1 us where the Python reader takes ~5 us, so the load
generator stops being the bulk of the latency it measures.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shlex
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

from .results import BenchError, Options, Target
from .subscribers import request_head

FLAGS = ("-O2", "-Wall", "-Wextra")


class NativeUnavailable(Exception):
    """The C reader cannot be built here (no compiler, a failed build): one line saying why."""


def cache_dir() -> Path:
    """Where built readers are kept."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ssehub"


def source() -> bytes:
    """The C reader's source, as installed with the package."""
    return resources.files(__package__).joinpath("reader.c").read_bytes()


def reader_binary() -> Path:
    """The built C reader, compiling it if this source and compiler have not been built yet."""
    compiler = shlex.split(os.environ.get("CC") or "cc")
    if not compiler or shutil.which(compiler[0]) is None:
        name = compiler[0] if compiler else "cc"
        raise NativeUnavailable(f"no C compiler ({name} not found; set CC)")
    code = source()
    key = hashlib.sha256(code + "\0".join([*compiler, *FLAGS]).encode()).hexdigest()[:16]
    folder = cache_dir()
    binary = folder / f"reader-{key}"
    if binary.exists():
        return binary
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # Built aside and renamed into place: concurrent first uses never run a partial file.
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            (Path(tmp) / "reader.c").write_bytes(code)
            built = Path(tmp) / "reader"
            done = subprocess.run(
                [*compiler, *FLAGS, "-o", str(built), str(Path(tmp) / "reader.c")],
                capture_output=True,
                text=True,
                timeout=120,
            )
            if done.returncode != 0:
                lines = done.stderr.splitlines()
                why = next((line for line in lines if "error" in line), " ".join(lines)[:200])
                raise NativeUnavailable(f"{compiler[0]} could not build the C reader: {why}")
            os.replace(built, binary)
    except (OSError, subprocess.SubprocessError) as exc:
        raise NativeUnavailable(f"cannot build the C reader in {folder}: {exc}") from None
    for old in folder.glob("reader-*"):  # builds of an earlier source: one is kept, not all
        if old != binary:
            with contextlib.suppress(OSError):  # another process may be removing it too
                old.unlink()
    return binary


class NativeReader:
    """A C reader process for ``count`` subscribers (pinned to ``options.load_cpu``)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def open(cls, binary: Path, target: Target, count: int, options: Options) -> NativeReader:
        """Start the process and hand it the request."""
        cpu = -1 if options.load_cpu is None else options.load_cpu
        args = [target.host, str(target.port), str(count), options.http, str(options.streams)]
        proc = await asyncio.create_subprocess_exec(
            binary, *args, str(cpu), stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        reader = cls(proc)
        reader._send(request_head(target, options.http))
        return reader

    def _send(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)

    async def _line(self) -> str:
        assert self.proc.stdout is not None
        line = (await self.proc.stdout.readline()).decode("utf-8", "replace").rstrip("\n")
        if line.startswith("error "):
            raise BenchError(line[6:])
        if not line:
            raise BenchError(f"the C reader exited with code {await self.proc.wait()}")
        return line

    async def connected(self) -> None:
        said = await self._line()
        if not said.startswith("connected "):
            raise BenchError(f"the C reader said {said[:100]!r}")

    async def start(self) -> None:
        self._send(b"start\n")

    async def count(self) -> int:
        self._send(b"count\n")
        return int(await self._line())

    async def stop(self) -> tuple[int, list[float], float]:
        self._send(b"stop\n")
        events, cpu = (await self._line()).split()
        assert self.proc.stdout is not None
        samples = [float(x) for x in (await self.proc.stdout.read()).split()]
        return int(events), samples, float(cpu)

    async def close(self) -> None:
        if self.proc.returncode is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()  # it exits when its stdin closes
            try:
                await asyncio.wait_for(self.proc.wait(), 2)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
