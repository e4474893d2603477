"""``voxpipe top [--config C]``: a live terminal view of the bus (Textual).

One row per actor (the config's first, then any other heard on the bus), refreshed once a second:
role, pool, state (ready / starting / down / missing, by the one liveness rule), age of its last
heartbeat, pid, CPU % and resident memory where the actor reports them, live streams (per worker:
streams/slots), the latency of the words each worker committed in the last minute (p50, p90),
commits, rejected messages, errors and lost messages. Above the table: the bus, how many actors
are up, the broker's message rate. ``q`` or Ctrl-C quits. It reads the bus with the config's
security, so it works over CURVE with the config's keys. ``--once`` prints one plain table and exits.
"""

from __future__ import annotations

import signal
import time

from pipeline.config import Override, load_config

from .bus_view import DOWN, MISSING, READY, ActorRow, BusView, drain, open_status_socket

COLUMNS = ("ACTOR", "ROLE", "POOL", "STATE", "AGE", "PID", "CPU%", "RSS", "STREAMS", "P50", "P90", "COMMITS",
           "REJECTED", "ERRORS", "LOST")


def _secs(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}s"


def _mib(x: int | None) -> str:
    return "-" if x is None else f"{x / 2**20:.0f}M"


def cells(row: ActorRow) -> list[str]:
    streams = "-" if row.streams is None else (f"{row.streams}/{row.slots}" if row.slots else str(row.streams))
    worker = row.role == "worker"
    return [row.name, row.role or "-", row.pool or "-", row.state, _secs(row.age), str(row.pid or "-"),
            "-" if row.cpu_percent is None else f"{row.cpu_percent:.0f}", _mib(row.rss_bytes), streams,
            _secs(row.p50) if worker else "", _secs(row.p90) if worker else "",
            str(row.commits) if worker else "", str(row.rejected), str(row.errors), str(row.lost)]


def summary(view: BusView, bus) -> str:
    rows = view.rows()
    up = sum(r.state not in (DOWN, MISSING) for r in rows)
    ready = sum(r.state == READY for r in rows)
    broker = next((p for p in view.liveness.peers.values() if p.role == "broker"), None)
    rate = broker.counters.get("messages_per_s") if broker is not None else None
    parts = [f"bus {bus.xpub}{' (CURVE)' if bus.security.curve else ''}", f"{len(rows)} actors",
             f"{up} up", f"{ready} ready"]
    if rate is not None:
        parts.append(f"broker {rate:.0f} msg/s")
    parts.append(time.strftime("%H:%M:%S"))
    return "  |  ".join(parts) + "    (q quits)"


def run_tui(cfg, view: BusView, sub) -> None:
    from textual.app import App, ComposeResult
    from textual.binding import Binding
    from textual.widgets import DataTable, Static

    class Top(App):
        TITLE = "voxpipe top"
        BINDINGS = [Binding("q", "quit", "quit"), Binding("ctrl+c", "quit", "quit", priority=True)]
        CSS = "#summary { height: 1; padding: 0 1; } DataTable { height: 1fr; }"

        def compose(self) -> ComposeResult:
            yield Static(id="summary")
            yield DataTable(id="actors", cursor_type="none", zebra_stripes=True)

        def on_mount(self) -> None:
            self.query_one(DataTable).add_columns(*COLUMNS)
            self.set_interval(0.1, self.poll)
            self.set_interval(1.0, self.show)
            self.show()

        def poll(self) -> None:
            drain(sub, view, 0)

        def show(self) -> None:
            table = self.query_one(DataTable)
            table.clear()
            for row in view.rows():
                table.add_row(*cells(row))
            self.query_one("#summary", Static).update(summary(view, cfg.bus))

    app = Top()
    signal.signal(signal.SIGTERM, lambda *_: app.exit())
    app.run()


def print_once(cfg, view: BusView, sub, wait: float) -> None:
    from rich.console import Console
    from rich.table import Table

    deadline = time.monotonic() + wait
    while (left := deadline - time.monotonic()) > 0:
        drain(sub, view, int(min(left, 0.1) * 1000) + 1)
    table = Table(*COLUMNS, title=summary(view, cfg.bus), box=None)
    for row in view.rows():
        table.add_row(*cells(row))
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # a pipe or a file: no column squeezed into 80
    console.print(table)


def register(sub) -> None:
    p = sub.add_parser("top", help="a live terminal view of the bus: actors, streams, latency, errors")
    p.add_argument("--config", "-c", default=None, help="pipeline YAML (its bus, security and actors)")
    p.add_argument("--xpub", default=None, help="broker XPUB endpoint (overrides the config)")
    p.add_argument("--once", action="store_true", help="print one table after a few seconds and exit")
    p.set_defaults(func=run)


def run(args) -> int:
    import zmq

    cfg = load_config(args.config, check_files=False, overrides=[Override("bus", {"xpub": args.xpub})])
    view = BusView(cfg.actor_names(), interval=cfg.bus.heartbeat_interval)
    ctx = zmq.Context()
    sub = open_status_socket(ctx, cfg.bus, ("status.", "transcript."))
    try:
        if args.once:
            print_once(cfg, view, sub, view.liveness.timeout)
        else:
            run_tui(cfg, view, sub)
    finally:
        sub.close()
        ctx.term()
    return 0
