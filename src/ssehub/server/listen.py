"""Why the server could not listen, in one line a person can act on."""

from __future__ import annotations

import errno
import socket

from ..errors import ConfigError


def cannot_listen(host: str, port: int, exc: OSError) -> ConfigError:
    """The ConfigError for a failed bind on ``host:port``, naming the setting to change."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if isinstance(exc, socket.gaierror):
        return ConfigError(
            f"--host {host}: not an address or a name this machine can resolve ({exc.strerror})"
        )
    if exc.errno == errno.EADDRINUSE:
        return ConfigError(
            f"cannot listen on {where}: the address is already in use (another hub or server"
            " holds the port): stop it or choose another --port"
        )
    if exc.errno == errno.EACCES:
        return ConfigError(
            f"cannot listen on {where}: permission denied (ports below 1024 need root or"
            " CAP_NET_BIND_SERVICE): choose a --port of 1024 or more"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return ConfigError(
            f"cannot listen on {where}: --host {host} is not an address of this machine"
            " (use 127.0.0.1, 0.0.0.0 or one of its interfaces' addresses)"
        )
    return ConfigError(f"cannot listen on {where}: {exc.strerror or exc}")
