"""``voxpipe export supervisord|systemd|compose|kubernetes CONFIG DIR``: a pipeline as process-manager
definitions (here), or as containers (:mod:`apps.export_compose`, :mod:`apps.export_kubernetes`).

Each actor becomes one program (supervisord) or one service (systemd) that
the manager restarts when it exits (``autorestart`` / ``Restart=``; a source
that exits 0 has finished its input and stays down), running the same command
line as ``voxpipe procfile``, under the config's restart rule (``restart:``,
:mod:`apps.restart`) as far as each manager can say it:

* systemd: ``RestartSec=`` (``restart.backoff``), growing up to
  ``restart.backoff_max`` (``RestartSteps=``, ``RestartMaxDelaySec=``, systemd
  254+); ``StartLimitBurst=`` failures within ``StartLimitIntervalSec=`` give up,
  and the unit's ``OnFailure=`` then stops the whole target (``<app>-give-up@``);
* supervisord: an event listener (``voxpipe restart-guard``) counts each
  program's unexpected exits and stops the group at ``restart.max_failures``
  within ``restart.window`` (the main supervisord.conf needs its
  ``[rpcinterface:supervisor]`` and a ``[unix_http_server]``, as in
  ``echo_supervisord_conf``); supervisord itself retries a program that fails
  to start ``startretries`` times, each wait one second longer.

Start and stop order follow the pipeline: the broker starts first and stops
last, the sources start last and stop first (supervisord ``priority``;
systemd ``After=`` chains, which systemd reverses when stopping). Stopping
sends SIGTERM, the signal on which actors drain (honcho's own supervisord
template sends SIGQUIT, which would skip that), and waits ``stop_timeout``
seconds before killing.

supervisord: ``DIR/<app>.conf`` (include it from supervisord.conf), logs in
``--log-dir`` (default ``DIR/logs``, created). systemd: ``DIR/<app>.target``
and ``DIR/<app>-<name>.service`` (copy to /etc/systemd/system, then
``systemctl enable --now <app>.target``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from pipeline.config import RestartConfig, load_config
from pipeline.errors import RuntimeFailure, UsageError

from .plan import ActorProcess, actor_processes, voxpipe_command

# start order: lower first; stopped in the reverse order
PRIORITY = {"broker": 100, "sink": 200, "web": 200, "metrics": 200, "worker": 300, "dispatcher": 350, "vad": 400,
            "capture": 500, "serve": 500}
STOP_TIMEOUT = {"worker": 60, "sink": 20, "dispatcher": 20}
DEFAULT_STOP_TIMEOUT = 15


def _unit_name(app: str, name: str) -> str:
    return f"{app}-{re.sub(r'[^A-Za-z0-9_-]', '-', name)}"


def _systemd_quote(arg: str) -> str:
    arg = arg.replace("%", "%%")
    if re.fullmatch(r"[A-Za-z0-9_@%+=:,./-]+", arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _supervisor_command(p: ActorProcess) -> str:
    return p.cmd.replace("%", "%%")


def _num(x: float) -> str:
    return f"{x:g}"


def render_supervisord(procs: list[ActorProcess], app: str, workdir: str, log_dir: str,
                       user: str | None = None, rule: RestartConfig | None = None) -> str:
    rule = rule or RestartConfig()
    blocks = []
    for p in procs:
        prog = _unit_name(app, p.name)
        restart = ["autorestart=unexpected", "exitcodes=0"] if p.role == "capture" else ["autorestart=true"]
        lines = [
            f"[program:{prog}]",
            f"command={_supervisor_command(p)}",
            f"directory={workdir}",
            "autostart=true",
            *restart,
            "startsecs=2",
            f"startretries={rule.max_failures}",
            f"priority={PRIORITY.get(p.role, 300)}",
            "stopsignal=TERM",
            f"stopwaitsecs={STOP_TIMEOUT.get(p.role, DEFAULT_STOP_TIMEOUT)}",
            "stopasgroup=true",
            "killasgroup=true",
            "redirect_stderr=true",
            f"stdout_logfile={log_dir}/{p.name}.log",
            'environment=PYTHONUNBUFFERED="1"',
        ]
        if user:
            lines.append(f"user={user}")
        blocks.append("\n".join(lines) + "\n")
    blocks.append(f"[group:{app}]\nprograms={','.join(_unit_name(app, p.name) for p in procs)}\n")
    guard = voxpipe_command() + ["restart-guard", "--group", app, "--max-failures", str(rule.max_failures),
                                 "--window", _num(rule.window)]
    blocks.append("\n".join([
        f"[eventlistener:{app}-restart-rule]",
        f"command={' '.join(guard).replace('%', '%%')}",
        "events=PROCESS_STATE_EXITED,PROCESS_STATE_FATAL",
        "autorestart=true",
        f"stderr_logfile={log_dir}/{app}-restart-rule.log",
        *([f"user={user}"] if user else []),
    ]) + "\n")
    return "\n".join(blocks)


def render_systemd(procs: list[ActorProcess], app: str, workdir: str, config: str,
                   user: str | None = None, rule: RestartConfig | None = None) -> dict[str, str]:
    """File name -> content: one service per actor, a target that wants them all, the give-up unit."""
    rule = rule or RestartConfig()
    files = {}
    give_up = f"{app}-give-up"
    levels = sorted({PRIORITY.get(p.role, 300) for p in procs})
    services = [f"{_unit_name(app, p.name)}.service" for p in procs]
    for p in procs:
        level = PRIORITY.get(p.role, 300)
        before = [lv for lv in levels if lv < level]
        after = [f"{_unit_name(app, q.name)}.service" for q in procs
                 if before and PRIORITY.get(q.role, 300) == before[-1]]
        unit = [
            "[Unit]",
            f"Description=voxpipe {p.role} {p.name} ({config})",
            f"PartOf={app}.target",
            f"StartLimitIntervalSec={_num(rule.window)}",
            f"StartLimitBurst={rule.max_failures}",
            f"OnFailure={give_up}@%n.service",
        ]
        if after:
            unit.append(f"After={' '.join(after)}")
        service = [
            "",
            "[Service]",
            "Type=simple",
            f"WorkingDirectory={_systemd_quote(workdir)}",
            "Environment=PYTHONUNBUFFERED=1",
            f"ExecStart={' '.join(_systemd_quote(a) for a in p.argv)}",
            "Restart=on-failure" if p.role == "capture" else "Restart=always",
            f"RestartSec={_num(max(rule.backoff, 0.1))}",
            f"RestartSteps={max(1, rule.max_failures - 1)}",
            f"RestartMaxDelaySec={_num(max(rule.backoff_max, 0.1))}",
            "RestartMode=direct",  # OnFailure= only once the start limit gives up (systemd 254+)
            "KillSignal=SIGTERM",
            "KillMode=mixed",
            f"TimeoutStopSec={STOP_TIMEOUT.get(p.role, DEFAULT_STOP_TIMEOUT)}",
        ]
        if user:
            service.append(f"User={user}")
        install = ["", "[Install]", f"WantedBy={app}.target", ""]
        files[f"{_unit_name(app, p.name)}.service"] = "\n".join(unit + service + install)
    files[f"{give_up}@.service"] = "\n".join([
        "[Unit]",
        f"Description=voxpipe: %i keeps failing: stop the pipeline {app}",
        "",
        "[Service]",
        "Type=oneshot",
        # a unit that is only restarting (older systemd calls OnFailure= then too) is left alone
        f"ExecStart=/bin/sh -c 'if systemctl is-failed --quiet %i; then echo \"voxpipe: %i failed "
        f"{rule.max_failures} times within {_num(rule.window)}s: stopping {app}.target\"; "
        f"systemctl --no-block stop {app}.target; fi'",
        "",
    ])
    files[f"{app}.target"] = "\n".join([
        "[Unit]",
        f"Description=voxpipe pipeline {config}",
        f"Wants={' '.join(services)}",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ])
    return files


def export(fmt: str, config: str, out_dir: str, app: str = "voxpipe", log_dir: str | None = None,
           user: str | None = None, workdir: str | None = None, image: str | None = None) -> list[Path]:
    """Write the definitions; returns the files written. Raises ConfigError for a bad config."""
    if fmt in CONTAINER_FORMATS:
        return CONTAINER_FORMATS[fmt](config, Path(out_dir).resolve(), app, image)
    cfg = load_config(config)
    procs = actor_processes(cfg)
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    workdir = str(Path(workdir or os.getcwd()).resolve())
    if fmt == "supervisord":
        logs = Path(log_dir).resolve() if log_dir else out / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        files = {f"{app}.conf": render_supervisord(procs, app, workdir, str(logs), user, cfg.restart)}
    elif fmt == "systemd":
        files = render_systemd(procs, app, workdir, cfg.path, user, cfg.restart)
    else:
        raise ValueError(f"unknown export format {fmt!r}")
    from .deploy import write_files

    return write_files(out, files)


def _compose(config, out, app, image):
    from .deploy import IMAGE
    from .export_compose import export_compose

    return export_compose(config, out, app, image or IMAGE)


def _kubernetes(config, out, app, image):
    from .deploy import IMAGE
    from .export_kubernetes import export_kubernetes

    return export_kubernetes(config, out, app, image or IMAGE)


CONTAINER_FORMATS = {"compose": _compose, "kubernetes": _kubernetes}


def register(sub) -> None:
    p = sub.add_parser("export", help="write supervisord, systemd, Docker Compose or Kubernetes definitions "
                                      "that run (and restart) a pipeline")
    p.add_argument("format", choices=["supervisord", "systemd", *CONTAINER_FORMATS])
    p.add_argument("config", help="pipeline YAML")
    p.add_argument("dir", help="folder to write the definitions into")
    p.add_argument("--app", default="voxpipe", help="program group / target name (default %(default)s)")
    p.add_argument("--log-dir", default=None, help="supervisord: where the logs go (default DIR/logs)")
    p.add_argument("--user", default=None, help="run the processes as this user")
    p.add_argument("--workdir", default=None, help="working directory of the processes (default: the current one)")
    p.add_argument("--image", default=None, help="compose, kubernetes: the container image (default voxpipe:latest)")
    p.set_defaults(func=run)


def run(args) -> int:
    if not re.fullmatch(r"[A-Za-z0-9_-]+", args.app):
        raise UsageError(f"--app {args.app!r}: use letters, digits, '_' and '-'")
    try:
        files = export(args.format, args.config, args.dir, args.app, args.log_dir, args.user, args.workdir,
                       args.image)
    except OSError as exc:
        raise RuntimeFailure(f"cannot write {args.dir}: {exc}") from None
    for f in files:
        print(f)
    return 0
