"""``ssehub bench``: the load generator's command line (the load itself is ``ssehub.bench``)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import rich_click as click

from .group import debug_option
from .reach import hub_url, reaching, url_option


@click.command()
@debug_option
@url_option("The Mercure hub to load.")
@click.option("--topic", default="urn:ssehub:bench", show_default=True)
@click.option("--token", envvar="SSEHUB_TOKEN", help="Publisher JWT (Mercure mode).")
@click.option("--subscriber-token", help="Subscriber JWT, if the hub refuses anonymous ones.")
@click.option(
    "--raw-subscribe", metavar="URL", callback=hub_url, help="Raw mode: any SSE stream URL."
)
@click.option(
    "--raw-publish", metavar="URL", callback=hub_url, help="Raw mode: POST the data here."
)
@click.option("--subscribers", default=1000, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--client-procs",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Subscriber processes, when one cannot keep up.",
)
@click.option(
    "--rate",
    "rates",
    multiple=True,
    type=click.FloatRange(min=0),
    default=[0.0],
    show_default=True,
    help="Events/s (0: as fast as answers come). Repeat to sweep.",
)
@click.option(
    "--window",
    default=64,
    show_default=True,
    type=click.IntRange(min=1),
    help="Requests in flight per conn.",
)
@click.option(
    "--conns",
    default=4,
    show_default=True,
    type=click.IntRange(min=1),
    help="Publisher connections.",
)
@click.option(
    "--payload",
    default=100,
    show_default=True,
    type=click.IntRange(min=20),
    help="Bytes of data per event (20 carry the send time).",
)
@click.option(
    "--duration",
    default=10.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds measured per run.",
)
@click.option(
    "--warmup",
    default=2.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds before measuring.",
)
@click.option(
    "--http",
    type=click.Choice(["1.1", "1.0", "2"]),
    default="1.1",
    show_default=True,
    help="Subscribers' protocol: 1.1 (chunked), 1.0 (close-delimited), 2 (h2c prior knowledge:"
    " serve with --http2).",
)
@click.option(
    "--streams-per-connection",
    default=100,
    show_default=True,
    type=click.IntRange(min=1, max=128),
    help="HTTP/2: subscribers sharing one connection.",
)
@click.option(
    "--reader",
    type=click.Choice(["auto", "c", "python"]),
    default="auto",
    show_default=True,
    help="Subscribers' reader: c (built on first use with $CC or cc), python (uvloop), or auto"
    " (c when it builds).",
)
@click.option("--hub-pid", type=int, help="The hub's PID: CPU and RSS per connection.")
@click.option("--load-cpu", type=click.IntRange(min=0), help="Pin the load to this CPU.")
@click.option(
    "--json", "json_path", type=click.Path(dir_okay=False, writable=True), help="Write results."
)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False, writable=True),
    help="Write a PNG: latency CDF, delivered against offered rate (needs matplotlib).",
)
def bench(
    url: str,
    topic: str,
    token: str | None,
    subscriber_token: str | None,
    raw_subscribe: str | None,
    raw_publish: str | None,
    subscribers: int,
    client_procs: int,
    rates: tuple[float, ...],
    window: int,
    conns: int,
    payload: int,
    duration: float,
    warmup: float,
    http: str,
    streams_per_connection: int,
    reader: str,
    hub_pid: int | None,
    load_cpu: int | None,
    json_path: str | None,
    plot_path: str | None,
) -> None:
    """Load a hub (ssehub, any Mercure hub, or any SSE server in raw mode) and measure
    deliveries/s, delivery ratio, latency and connect rate."""
    import dataclasses
    import resource

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from .. import bench as load

    _check_bench_options(hub_pid, load_cpu, json_path, plot_path)
    pids: tuple[int, ...] = ()
    if hub_pid is not None:
        children = Path(f"/proc/{hub_pid}/task/{hub_pid}/children")
        extra = children.read_text().split() if children.exists() else []
        pids = (hub_pid, *map(int, extra))
    if raw_subscribe or raw_publish:
        if not (raw_subscribe and raw_publish):
            raise click.BadParameter("raw mode needs both --raw-subscribe and --raw-publish")
        target = load.Target.raw(raw_subscribe, raw_publish, pids)
    else:
        if token is None:
            raise click.BadParameter("a Mercure hub needs --token (a publisher JWT)")
        _check_hub(url, topic, token)
        target = load.Target.mercure(url, topic, token, pids)
        if subscriber_token:
            target = dataclasses.replace(
                target, subscribe_path=target.subscribe_path + f"&authorization={subscriber_token}"
            )
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    results = []
    columns = (TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, transient=True) as progress:
        for rate in rates:
            label = f"{subscribers} subscribers @ {'max' if not rate else f'{rate:g}/s'}"
            task = progress.add_task(label, total=1.0)

            def tick(phase: str, fraction: float, task: Any = task, label: str = label) -> None:
                progress.update(task, completed=fraction, description=f"{label}: {phase}")

            options = load.Options(
                subscribers,
                client_procs,
                rate,
                window,
                conns,
                payload,
                duration,
                warmup,
                load_cpu,
                http,
                streams_per_connection,
                reader,
            )
            try:
                results.append(asyncio.run(load.run(target, options, tick)))
            except load.BenchError as exc:
                raise click.ClickException(str(exc)) from None
            progress.remove_task(task)
    for result in results:
        click.echo(load.report(result))
    if json_path:
        rows = [
            {k: v for k, v in dataclasses.asdict(r).items() if k != "latency_samples"}
            for r in results
        ]
        Path(json_path).write_text(json.dumps(rows, indent=2))
    if plot_path:
        load.plot(results, Path(plot_path))


def _check_bench_options(
    hub_pid: int | None, load_cpu: int | None, json_path: str | None, plot_path: str | None
) -> None:
    """What would otherwise fail only after the whole run (or in a child process)."""
    if hub_pid is not None and not os.path.exists(f"/proc/{hub_pid}"):
        raise click.BadParameter(f"no process {hub_pid} here", param_hint="'--hub-pid'")
    if load_cpu is not None and load_cpu not in os.sched_getaffinity(0):
        usable = ", ".join(map(str, sorted(os.sched_getaffinity(0))))
        raise click.BadParameter(
            f"CPU {load_cpu} is not one this process may use ({usable})", param_hint="'--load-cpu'"
        )
    for hint, path in (("'--json'", json_path), ("'--plot'", plot_path)):
        folder = os.path.dirname(os.path.abspath(path)) if path else None
        if folder is not None and not os.path.isdir(folder):
            raise click.BadParameter(f"the directory {folder} does not exist", param_hint=hint)
    if plot_path is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise click.BadParameter(
                "plots need matplotlib: pip install matplotlib", param_hint="'--plot'"
            ) from None


def _check_hub(url: str, topic: str, token: str) -> None:
    """One publish before the load: an unreachable hub, a refused token or topic is then one
    line now rather than a run of errors."""
    from ..client import publish

    with reaching(url, refused="the hub refused the bench's publish"):
        asyncio.run(publish(url, topic, "ssehub bench: checking the hub", token=token))
