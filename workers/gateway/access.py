"""Who may connect, and how much one connection may send.

Keys: with ``gateway.api_keys`` set, every client must present one of them
(config validation requires keys whenever the gateway binds beyond loopback;
on loopback without keys, nobody needs one). A client presents its key the
way its own API does:

* ``Authorization: Token KEY`` (Deepgram's SDKs) or ``Authorization: Bearer KEY``
  (OpenAI's SDKs, and Deepgram's temporary tokens);
* browsers, which cannot set headers on a WebSocket: the subprotocols
  ``token, KEY`` (Deepgram) or ``openai-insecure-api-key.KEY`` (OpenAI).

Limits (per connection): :class:`RateLimit` bounds the messages per second
(a token bucket holding two seconds' worth); frame size, session length and
idle time are checked by the endpoints with the values of
:class:`pipeline.config.GatewayConfig`.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping

OPENAI_KEY_PROTOCOL = "openai-insecure-api-key."


def presented_key(headers: Mapping[str, str], subprotocols: Iterable[str] = ()) -> tuple[str | None, str | None]:
    """The key a client sent, and the subprotocol to accept if it came in one."""
    auth = headers.get("authorization", "")
    scheme, _, value = auth.strip().partition(" ")
    if scheme.lower() in ("token", "bearer") and value.strip():
        return value.strip(), None
    protos = [p.strip() for p in subprotocols]
    for i, p in enumerate(protos):
        if p.lower() == "token" and i + 1 < len(protos):
            return protos[i + 1], "token"
        if p.startswith(OPENAI_KEY_PROTOCOL):
            return p[len(OPENAI_KEY_PROTOCOL):], "realtime" if "realtime" in protos else p
    return None, None


def key_ok(keys: tuple, key: str | None) -> bool:
    """No keys configured: anyone (the gateway is on loopback). Else the key must be one of them."""
    if not keys:
        return True
    if not key:
        return False
    return any(secrets.compare_digest(key.encode(), k.encode()) for k in keys)


class RateLimit:
    """A token bucket: ``rate`` messages per second on average, bursts of ``2 * rate``."""

    def __init__(self, rate: float, now: float):
        self.rate = rate
        self.capacity = max(1.0, 2.0 * rate)
        self.tokens = self.capacity
        self.last = now

    def allow(self, now: float) -> bool:
        self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True
