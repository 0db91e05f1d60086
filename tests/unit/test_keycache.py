"""The per-process cache of verified API keys."""

from __future__ import annotations

from fkod.core.auth.keycache import KeyCache, KeySnapshot


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def snapshot(key_id: int) -> KeySnapshot:
    return KeySnapshot(
        id=key_id, partner_id=1, livemode=False, scopes=(), key_prefix="sk_test_x",
        key_hash=f"h{key_id}", previous_key_hash=None, previous_key_expires_at=None,
        status="active", expires_at=None, allowed_ips=(), api_version=None, rate_limit=None,
        rate_limit_window=None, partner_status="active", partner_deleted=False, plan=None)


def test_entry_expires_after_ttl():
    clock = Clock()
    cache = KeyCache(1.0, clock=clock)
    cache.put("h1", snapshot(1))
    clock.now = 0.99
    assert cache.get("h1") is not None
    clock.now = 1.0
    assert cache.get("h1") is None


def test_invalidate_forgets_every_digest():
    cache = KeyCache(1.0)
    cache.put("current", snapshot(7))
    cache.put("previous", snapshot(7))
    cache.put("other", snapshot(8))
    cache.invalidate_key(7)
    assert cache.get("current") is None
    assert cache.get("previous") is None
    assert cache.get("other") is not None


def test_zero_ttl_caches_nothing():
    cache = KeyCache(0)
    cache.put("h1", snapshot(1))
    assert cache.get("h1") is None


def test_bounded_size():
    clock = Clock()
    cache = KeyCache(1.0, max_entries=3, clock=clock)
    for key_id in range(5):
        clock.now += 0.01
        cache.put(f"h{key_id}", snapshot(key_id))
    kept = [key_id for key_id in range(5) if cache.get(f"h{key_id}") is not None]
    assert kept == [2, 3, 4]
