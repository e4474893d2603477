"""Who may publish what, and how much: the broker's rules for each publishing connection.

The broker knows every publishing connection by an identity (the ZAP ``User-Id``,
:class:`pipeline.security.BusAuthenticator`): with CURVE the name of its key, which is the
actor's name when ``voxpipe keys DIR --config C`` made per-actor keys; without CURVE
``conn:<n>``, one per connection.

**Topics** (CURVE only, :class:`TopicGuard`): each actor of the config may publish only

* a capture (``sources[]``): ``audio.<its stream>``;
* the VAD: ``speech.*``;
* a worker (each replica of it): ``transcript.<its name>.*`` and ``partial.<its name>.*`` (and
  the same under its ``pool``, when the config gives it one);
* the dispatcher: ``dispatch.*`` and its pools' ``transcript.<pool>.*`` (ends and refusals);
* the web page: ``audio.*`` (the browser streams it creates);
* every actor: its own ``status.<name>``.

Any other key (``client``, a person's laptop) may publish only handshake probes on
``status.<id>`` where ``<id>`` is no actor's name. Everything else is dropped and counted.

**Quotas** (always, :class:`PublisherQuota`): one identity may keep at most a number of stream
ids live per topic family (``audio``: ``bus.max_streams_per_publisher``, raised to
``web.max_sessions`` when the page is on; ``speech``: ``vad.max_streams``; ``transcript`` and
``partial``: the largest ``workers[].max_streams``). A stream id is live from its first message
until it has been quiet for ``QUOTA_IDLE_S``. Messages for further ids are dropped and
counted, so one publisher flooding stream ids reaches the actors with a handful of them.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from .config_schema import gateway_stream_prefix

QUOTA_IDLE_S = 5.0  # a stream id nobody published on for this long no longer counts against its publisher
MAX_IDENTITIES = 1024  # identities whose rights and quotas are remembered (least recent forgotten first)


@dataclass(frozen=True)
class Rights:
    exact: frozenset = frozenset()  # topics (bytes)
    prefixes: tuple = ()  # topic prefixes (bytes, ending with '.')
    probes: bool = False  # status.<id> for ids that are no actor's name
    actors: frozenset = frozenset()  # the config's actor names (bytes), for ``probes``

    def allows(self, topic: bytes) -> bool:
        if topic in self.exact or topic.startswith(self.prefixes):
            return True
        if self.probes and topic.startswith(b"status."):
            return topic[7:] not in self.actors
        return False


def rights_for(cfg, identity: str) -> Rights:
    """What the key named ``identity`` may publish on the bus of ``cfg``."""
    def b(*parts: str) -> bytes:
        return ".".join(parts).encode()

    own = {b("status", identity)}
    for s in cfg.sources:
        if s.name == identity:
            return Rights(frozenset(own | {b("audio", s.stream_id)}))
    if cfg.vad.enabled and cfg.vad.name == identity:
        return Rights(frozenset(own), (b"speech.",))
    if cfg.dispatched and cfg.dispatcher.name == identity:
        return Rights(frozenset(own), (b"dispatch.",) + tuple(b("transcript", p) + b"." for p in cfg.pools()))
    for w in cfg.workers:
        if identity == w.name or identity in w.actor_names():
            names = dict.fromkeys([w.name, getattr(w, "pool", None) or w.name])
            return Rights(frozenset(own), tuple(b(fam, n) + b"." for n in names for fam in ("transcript", "partial")))
    if cfg.web.enabled and cfg.web.name == identity:
        return Rights(frozenset(own), (b"audio.",))
    if cfg.gateway.name == identity:  # in the config, or `voxpipe serve --config` beside it: its clients' audio
        return Rights(frozenset(own), (b("audio", gateway_stream_prefix(identity)),))
    if identity in cfg.actor_names():  # broker, sinks: heartbeats only
        return Rights(frozenset(own))
    return Rights(probes=True, actors=frozenset(n.encode() for n in cfg.actor_names()))


class TopicGuard:
    """``allowed(identity, topic)``: the rights of each identity, from the config, cached."""

    def __init__(self, cfg):
        self.cfg = cfg
        self._rights: OrderedDict[str, Rights] = OrderedDict()

    def allowed(self, identity: str, topic: bytes) -> bool:
        rights = self._rights.get(identity)
        if rights is None:
            rights = self._rights[identity] = rights_for(self.cfg, identity)
            if len(self._rights) > MAX_IDENTITIES:
                self._rights.popitem(last=False)
        return rights.allows(topic)


def quota_limits(cfg) -> dict[bytes, int]:
    """Live stream ids one publisher may keep, per topic family."""
    audio = cfg.bus.max_streams_per_publisher
    if cfg.web.enabled:
        audio = max(audio, cfg.web.max_sessions)
    transcripts = max([w.max_streams for w in cfg.workers] or [16])
    return {b"audio": audio, b"speech": cfg.vad.max_streams, b"transcript": transcripts, b"partial": transcripts}


class PublisherQuota:
    """Live stream ids per (identity, topic family); ``admit`` says whether a message may pass."""

    def __init__(self, limits: dict[bytes, int], idle: float = QUOTA_IDLE_S, max_identities: int = MAX_IDENTITIES):
        self.limits = limits
        self.idle = idle
        self.max_identities = max_identities
        self._live: OrderedDict[tuple[str, bytes], OrderedDict[bytes, float]] = OrderedDict()

    def admit(self, identity: str, topic: bytes, now: float) -> bool:
        family, _, rest = topic.partition(b".")
        limit = self.limits.get(family)
        if limit is None or not rest:
            return True
        stream = rest.rpartition(b".")[2]
        key = (identity, family)
        live = self._live.pop(key, None)
        if live is None:
            live = OrderedDict()
        self._live[key] = live  # most recently active identity last
        while len(self._live) > self.max_identities:
            self._live.popitem(last=False)
        if stream in live:
            live.move_to_end(stream)
            live[stream] = now
            return True
        while live and next(iter(live.values())) < now - self.idle:
            live.popitem(last=False)
        if len(live) >= limit:
            return False
        live[stream] = now
        return True

    def live(self, identity: str, family: bytes) -> int:
        return len(self._live.get((identity, family), ()))
