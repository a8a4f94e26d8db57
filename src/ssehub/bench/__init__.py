"""``ssehub bench``: fan-out load for ssehub, any Mercure hub, or (raw mode) any SSE server.

N subscribers (in several processes if asked) on one topic and a publisher at a fixed rate or
as fast as answers come back (a window of pipelined requests per connection). Each payload
starts with the publisher's ``time.monotonic_ns()``, so subscribers measure latency (one sample
per received chunk: its oldest event). Subscribers only count blank lines, in C (``reader.c``,
one epoll loop per process) or, where no compiler builds it, in Python, so the load stays
cheap; the report says which reader ran, gives its CPU and says when it saturated.
"""

from .load import run
from .results import (
    BenchError,
    Options,
    Result,
    Target,
    percentile,
    plot,
    proc_cpu_s,
    report,
    rss_kib,
)

__all__ = [
    "BenchError",
    "Options",
    "Result",
    "Target",
    "percentile",
    "plot",
    "proc_cpu_s",
    "report",
    "rss_kib",
    "run",
]
