"""A short-lived, per-process cache of verified API keys.

The gateway verifies a key by its HMAC and one indexed query. This cache keeps
the result for ``fkod.gateway.key_cache_seconds`` (at most one second), so a
busy key costs one query a second instead of one a call. A change to a key
(revoke, rotate, update) removes it from the cache of the process that made
the change at once; every other process sees the change when its entry
expires, so within one second.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time


@dataclasses.dataclass(frozen=True)
class PlanSnapshot:
    """The plan fields the gateway reads, named as on the Plan model."""

    id: int | None
    code: str | None
    requests_per_hour: int | None
    requests_per_day: int | None


@dataclasses.dataclass(frozen=True)
class KeySnapshot:
    """The key, partner and plan fields the gateway reads, named as on the ApiKey model."""

    id: int
    partner_id: int
    livemode: bool
    scopes: tuple[str, ...]
    key_prefix: str
    key_hash: str
    previous_key_hash: str | None
    previous_key_expires_at: dt.datetime | None
    status: str
    expires_at: dt.datetime | None
    allowed_ips: tuple[str, ...]
    api_version: str | None
    rate_limit: int | None
    rate_limit_window: int | None
    partner_status: str
    partner_deleted: bool
    plan: PlanSnapshot | None

    @classmethod
    def from_rows(cls, key, partner, plan) -> KeySnapshot:
        return cls(
            id=key.id, partner_id=key.partner_id, livemode=key.livemode,
            scopes=tuple(key.scopes or ()), key_prefix=key.key_prefix, key_hash=key.key_hash,
            previous_key_hash=key.previous_key_hash,
            previous_key_expires_at=key.previous_key_expires_at, status=key.status,
            expires_at=key.expires_at, allowed_ips=tuple(key.allowed_ips or ()),
            api_version=key.api_version, rate_limit=key.rate_limit,
            rate_limit_window=key.rate_limit_window, partner_status=partner.status,
            partner_deleted=partner.deleted_at is not None,
            plan=None if plan is None else PlanSnapshot(
                plan.id, plan.code, plan.requests_per_hour, plan.requests_per_day),
        )


class KeyCache:
    """Snapshots by key digest, each kept for ``ttl_seconds``; thread-safe and bounded."""

    def __init__(self, ttl_seconds: float, max_entries: int = 10_000, clock=time.monotonic):
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self._clock = clock
        self._entries: dict[str, tuple[float, KeySnapshot]] = {}
        self._lock = threading.Lock()

    def get(self, digest: str) -> KeySnapshot | None:
        if self.ttl_seconds <= 0:
            return None
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return None
            if self._clock() - entry[0] >= self.ttl_seconds:
                del self._entries[digest]
                return None
            return entry[1]

    def put(self, digest: str, snapshot: KeySnapshot) -> None:
        if self.ttl_seconds <= 0:
            return
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._evict_expired()
            if len(self._entries) >= self.max_entries:
                # Still full of live entries: drop the oldest rather than grow.
                oldest = min(self._entries, key=lambda item: self._entries[item][0])
                del self._entries[oldest]
            self._entries[digest] = (self._clock(), snapshot)

    def invalidate_key(self, key_id: int) -> None:
        """Forget every digest (current or previous secret) of one key."""
        with self._lock:
            for digest in [digest for digest, (_, snapshot) in self._entries.items()
                           if snapshot.id == key_id]:
                del self._entries[digest]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def _evict_expired(self) -> None:
        now = self._clock()
        for digest in [digest for digest, (stored_at, _) in self._entries.items()
                       if now - stored_at >= self.ttl_seconds]:
            del self._entries[digest]
