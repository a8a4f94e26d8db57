"""``ssehub serve`` raises its soft limit on open files so --max-connections can be reached."""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest

PROBE = """
import resource
from ssehub.server import open_files_for
open_files_for(2000)
print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"""


def test_the_soft_limit_is_raised_toward_max_connections() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2064:
        pytest.skip(f"the hard limit here ({hard}) is below what the check needs")

    def low_soft_limit() -> None:  # as many machines start a process: 256 files
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        preexec_fn=low_soft_limit,
        capture_output=True,
        text=True,
        check=True,
    )
    assert int(out.stdout) == 2000 + 64
