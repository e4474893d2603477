"""The metrics actor: the bus as Prometheus metrics at ``http://HOST:PORT/metrics``.

An actor of its own (not a part of the broker: the broker forwards without decoding, and stays
that cheap; the metrics actor decodes everything it counts, and a crash or a slow scrape never
touches the bus). It subscribes to ``status.`` (every actor's heartbeat), ``transcript.`` and
``partial.`` and turns them into metrics (:mod:`workers.metrics_registry`, with the official
``prometheus_client``); ``/healthz`` and ``/readyz`` answer on the same port. Started by
``voxpipe up`` when the config has ``metrics: {enabled: true}``; names and labels are listed in
``docs/running.md``.
"""

from __future__ import annotations

from .base import Actor, actor_config, add_actor_arguments, run_actor


class MetricsActor(Actor):
    role = "metrics"

    def __init__(self, name, bus, mcfg, config=None):
        super().__init__(name, bus, config)
        from .metrics_registry import BusMetrics  # prometheus_client, imported only to serve

        self.mcfg = mcfg
        self.metrics = BusMetrics(interval=bus.heartbeat_interval)

    def subscriptions(self):
        return ["status.", "transcript.", "partial."]

    def http_address(self):
        return self.mcfg.host, self.mcfg.port

    def http_routes(self):
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        def scrape():
            return 200, CONTENT_TYPE_LATEST, generate_latest(self.metrics.registry)

        return {"/metrics": scrape}

    def handle(self, topic, msg):
        self.metrics.observe(topic, msg)

    def tick(self, now: float) -> None:
        for peer in self.metrics.newly_dead(now):
            self.log.warning("%s (%s) is down: no heartbeat for %.0fs", peer.name, peer.role,
                             self.metrics.liveness.timeout)

    def info(self) -> dict:
        port = self.http.port if self.http is not None else self.mcfg.port
        return {"endpoint": f"http://{self.mcfg.host}:{port}/metrics",
                "actors": len(self.metrics.liveness.peers)}


def register(sub) -> None:
    p = sub.add_parser("metrics", help="serve the bus as Prometheus metrics (/metrics)")
    add_actor_arguments(p, "metrics")
    p.add_argument("--host", default=None, help="address to listen on (default: the config's, 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port to listen on (default: the config's, 9870)")
    p.set_defaults(func=run)


def run(args) -> int:
    def build():
        cfg = actor_config(args, "metrics", {"enabled": True, "name": args.name, "host": args.host,
                                             "port": args.port})
        return MetricsActor(cfg.metrics.name, cfg.bus, cfg.metrics, cfg)

    return run_actor(build)
