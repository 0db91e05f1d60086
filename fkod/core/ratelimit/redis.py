"""Rate limiter whose counts live in Redis, shared by every process and host.

Each subject is one Redis hash at ``key_prefix + subject``. A field
``"<window seconds>:<sub-bucket index>"`` stores the units counted in that
sub-bucket, so a subject has at most about ``sub_buckets`` fields per window
length, whatever the limit. One Lua script measures and updates all windows of
a call atomically and takes the time from the Redis server, so hosts with
skewed clocks still agree.

With a ``lease_size`` above 1 a process leases permits: one script call
counts a batch of permits in every window at once, and the process spends
them locally until the lease expires. Leasing never lets a window exceed its
limit, because every permit is counted before it is spent. Its cost is that
another process may be rejected while permits are still held unspent. See
:class:`RedisRateLimiter` for the bound.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import logging
import secrets
import threading
import time
from collections.abc import Sequence

import redis

from fkod.core.ratelimit.base import (
    UNLIMITED,
    LimitCheck,
    RateLimitDecision,
    RateLimiter,
    RateLimiterUnavailable,
    WindowUsage,
    bucket_index,
    summarize,
    validate_checks,
    validate_cost,
    validate_sub_buckets,
)

logger = logging.getLogger(__name__)

MAX_LEASE_SIZE = 1000
# A lease takes at most 1/LEASE_SHARE of the free units of the tightest
# window, so it shrinks as the window fills and is a single request's cost
# once fewer than 2 * LEASE_SHARE units are free.
LEASE_SHARE = 4
# Expired leases whose unspent permits one script call returns, at most.
MAX_REFUNDS_PER_CALL = 16

# The script repeats the arithmetic of base.bucket_index, base.bucket_start_ms
# and base.measure_window. Lua numbers are doubles, so floor_div corrects the
# rounding of a / b and every product stays below 2**53 (see MAX_SUB_BUCKETS).
#
# KEYS[i]   hash of the subject of check i (i <= check count), then the hashes
#           named by the refunds. Several entries may name one key.
# ARGV[1]   mode: "hit" counts the cost when every window accepts it, "lease"
#           counts a batch of permits (at least the cost), "peek" and
#           "refund" count nothing.
# ARGV[2]   cost, an integer >= 1
# ARGV[3]   sub-buckets per window
# ARGV[4]   check count K
# ARGV[5]   lease size: the most permits a lease may take
# ARGV[6]   lease token, which names the lease record of a granted lease
# ARGV[5 + 2i], ARGV[6 + 2i]   limit and window seconds of check i
# ARGV[7 + 2K]   refund count R. R groups of five values follow, one per
#           refunded window: the KEYS index of its subject hash, the lease
#           token, the window seconds, the sub-bucket index of the grant and
#           the unspent permits.
#
# Refunds run first. A refund subtracts the unspent permits of an expired
# lease from the sub-bucket they were counted in, but only while the hash
# still has that lease's record, so a refund after a reset takes nothing
# that other calls counted.
#
# Returns {allowed, used_1, reset_ms_1, wait_ms_1, used_2, ...} where used
# includes the units counted by this call. Mode "lease" appends
# {granted, now_ms, lease_end_ms}.
_SCRIPT = """
if redis.replicate_commands then
  -- Redis 3.2 to 4.x replicates scripts verbatim by default, and in that
  -- mode rejects writes after the non-deterministic TIME.
  redis.replicate_commands()
end

local function floor_div(a, b)
  local q = math.floor(a / b)
  if q * b > a then
    q = q - 1
  elseif (q + 1) * b <= a then
    q = q + 1
  end
  return q
end

local function ceil_div(a, b)
  return -floor_div(-a, b)
end

local mode = ARGV[1]
local cost = tonumber(ARGV[2])
local sub_buckets = tonumber(ARGV[3])
local check_count = tonumber(ARGV[4])
local lease_size = tonumber(ARGV[5])
local lease_token = ARGV[6]
-- The same value as LEASE_SHARE in redis.py.
local lease_share = 4

local server_time = redis.call('TIME')
local now_ms = tonumber(server_time[1]) * 1000 + math.floor(tonumber(server_time[2]) / 1000)

local function bucket_index(window)
  return floor_div(now_ms * sub_buckets, window * 1000)
end

local function bucket_start(index, window)
  return ceil_div(index * window * 1000, sub_buckets)
end

-- Returns the unspent permits of expired leases to their sub-buckets.
local refund_base = 7 + 2 * check_count
local refund_count = tonumber(ARGV[refund_base])
local refunded = {}
for r = 0, refund_count - 1 do
  local at = refund_base + 1 + 5 * r
  local key = KEYS[tonumber(ARGV[at])]
  local record = 'lease:' .. ARGV[at + 1]
  local field = ARGV[at + 2] .. ':' .. ARGV[at + 3]
  local amount = tonumber(ARGV[at + 4])
  if redis.call('HEXISTS', key, record) == 1 then
    local current = tonumber(redis.call('HGET', key, field) or '0') or 0
    local take = math.min(current, amount)
    if take > 0 and take == current then
      redis.call('HDEL', key, field)
    elseif take > 0 then
      redis.call('HINCRBY', key, field, -take)
    end
    refunded[#refunded + 1] = {key, record}
  end
end
for _, pair in ipairs(refunded) do
  redis.call('HDEL', pair[1], pair[2])
end

-- Reads a subject hash once per call. Live sub-buckets are grouped by window
-- length and sorted oldest first. Expired and unparsable fields, and lease
-- records past their end, are collected for deletion. A sub-bucket from a
-- later index than now (the server clock went back) stays live so that
-- quota is never freed early.
local subjects = {}
local function load_subject(key)
  local state = subjects[key]
  if state then
    return state
  end
  state = {windows = {}, stale = {}, ttl_ms = 0, lease_until = 0}
  local flat = redis.call('HGETALL', key)
  for i = 1, #flat, 2 do
    local field = flat[i]
    if string.sub(field, 1, 6) == 'lease:' then
      local until_ms = tonumber(flat[i + 1])
      if not until_ms or until_ms <= now_ms then
        state.stale[#state.stale + 1] = field
      end
    else
      local sep = string.find(field, ':', 1, true)
      local window, index
      if sep then
        window = tonumber(string.sub(field, 1, sep - 1))
        index = tonumber(string.sub(field, sep + 1))
      end
      if window and index and window >= 1 and index > bucket_index(window) - sub_buckets then
        local list = state.windows[window]
        if not list then
          list = {}
          state.windows[window] = list
        end
        list[#list + 1] = {index, tonumber(flat[i + 1])}
      else
        state.stale[#state.stale + 1] = field
      end
    end
  end
  for _, list in pairs(state.windows) do
    table.sort(list, function(a, b) return a[1] < b[1] end)
  end
  subjects[key] = state
  return state
end

-- Returns used, reset_ms and wait_ms of one window before counting.
local function measure(list, limit, window)
  local used = 0
  for _, bucket in ipairs(list) do
    used = used + bucket[2]
  end
  local reset_ms = now_ms
  if #list > 0 then
    reset_ms = bucket_start(list[1][1] + sub_buckets, window)
  end
  if used + cost <= limit then
    return used, reset_ms, 0
  end
  if cost > limit then
    return used, reset_ms, window * 1000
  end
  local left = used
  for _, bucket in ipairs(list) do
    left = left - bucket[2]
    if left + cost <= limit then
      return used, reset_ms, bucket_start(bucket[1] + sub_buckets, window) - now_ms
    end
  end
  return used, reset_ms, window * 1000
end

-- Adds amount to the current sub-bucket of one window, once per subject and
-- window length, and records the expiry the subject hash needs and the end
-- of the span in which a refund to this sub-bucket can still matter.
local function count_window(key, window, amount)
  local state = subjects[key]
  state.counted = state.counted or {}
  if state.counted[window] then
    return
  end
  state.counted[window] = true
  local index = bucket_index(window)
  redis.call('HINCRBY', key, window .. ':' .. index, amount)
  local ttl_ms = window * 1000 + ceil_div(window * 1000, sub_buckets)
  if ttl_ms > state.ttl_ms then
    state.ttl_ms = ttl_ms
  end
  local live_until = bucket_start(index + sub_buckets, window)
  if live_until > state.lease_until then
    state.lease_until = live_until
  end
end

-- Deletes expired fields and makes sure the hash expires no earlier than its
-- newest sub-bucket needs. A longer expiry set by another window is kept.
local function finish_subject(key)
  local state = subjects[key]
  local stale = state.stale
  for first = 1, #stale, 500 do
    redis.call('HDEL', key, unpack(stale, first, math.min(first + 499, #stale)))
  end
  if state.ttl_ms > 0 and redis.call('PTTL', key) < state.ttl_ms then
    redis.call('PEXPIRE', key, state.ttl_ms)
  end
end

local results = {}
local allowed = 1
local free = nil
for i = 1, check_count do
  local limit = tonumber(ARGV[5 + 2 * i])
  local window = tonumber(ARGV[6 + 2 * i])
  local state = load_subject(KEYS[i])
  local used, reset_ms, wait_ms = measure(state.windows[window] or {}, limit, window)
  if wait_ms > 0 then
    allowed = 0
  end
  if free == nil or limit - used < free then
    free = limit - used
  end
  results[i] = {used, reset_ms, wait_ms}
end

local amount = cost
if mode == 'lease' and allowed == 1 then
  amount = math.min(lease_size, math.floor(free / lease_share))
  if amount < cost then
    amount = cost
  end
end

local lease_end_ms = now_ms
if (mode == 'hit' or mode == 'lease') and allowed == 1 and check_count > 0 then
  lease_end_ms = nil
  for i = 1, check_count do
    local window = tonumber(ARGV[6 + 2 * i])
    count_window(KEYS[i], window, amount)
    local result = results[i]
    if result[1] == 0 then
      result[2] = bucket_start(bucket_index(window) + sub_buckets, window)
    end
    result[1] = result[1] + amount
    local bucket_end = bucket_start(bucket_index(window) + 1, window)
    if lease_end_ms == nil or bucket_end < lease_end_ms then
      lease_end_ms = bucket_end
    end
  end
  for key, _ in pairs(subjects) do
    local state = subjects[key]
    if state.counted then
      if amount > cost then
        redis.call('HSET', key, 'lease:' .. lease_token, state.lease_until)
      end
      finish_subject(key)
    end
  end
end

local reply = {allowed}
for i = 1, check_count do
  reply[#reply + 1] = results[i][1]
  reply[#reply + 1] = results[i][2]
  reply[#reply + 1] = results[i][3]
end
if mode == 'lease' then
  reply[#reply + 1] = allowed == 1 and amount or 0
  reply[#reply + 1] = now_ms
  reply[#reply + 1] = lease_end_ms
end
return reply
"""


@dataclasses.dataclass
class _Lease:
    """Permits counted in Redis for one list of checks, spent by this process.

    ``usages`` are the windows as the grant left them, with the whole grant
    counted. ``deadline`` is on ``time.monotonic()``. After it no permit is
    spent, because every permit must be spent within the sub-buckets that
    counted it.
    """

    checks: tuple[LimitCheck, ...]
    token: str
    usages: list[WindowUsage]
    unspent: int
    deadline: float
    granted_ms: int

    def decision(self) -> RateLimitDecision:
        """Return the decision of the last spend, counting unspent permits as free."""
        return summarize(True, [
            WindowUsage(check=usage.check, used=usage.used - self.unspent,
                        reset_ms=usage.reset_ms, wait_ms=0)
            for usage in self.usages
        ])


class _LeaseSlot:
    """The lease of one list of checks. ``lock`` serializes spending and renewing."""

    __slots__ = ("lease", "lock", "retired")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lease: _Lease | None = None
        self.retired = False


# A refund entry: subject key, lease token, window seconds, sub-bucket index, permits.
_Refund = tuple[str, str, int, int, int]


class RedisRateLimiter(RateLimiter):
    """Sliding-window limiter shared through Redis.

    ``client`` is used as given, including its timeouts and retry policy.
    Connection failures and timeouts raise :class:`RateLimiterUnavailable`.
    Redis errors of any other kind (for example a script error) propagate
    unchanged. The script needs Redis 3.2 or later and was tested with Redis
    7.0 only. :meth:`close` closes ``client``.

    With ``lease_size`` 1 every hit is one script call. With a larger
    ``lease_size``, a hit that finds no usable lease takes one. The script
    counts ``max(cost, min(lease_size, free // LEASE_SHARE))`` permits at
    once, where ``free`` is the free units of the tightest window. Later hits
    with the same checks spend them without a round trip. A lease ends with
    the earliest current sub-bucket of its windows. Its unspent permits go
    back to Redis with the process's next script call after it ends, or on
    :meth:`close`, and stay counted until then. So a process can be rejected
    early by at most ``max(cost, lease_size) - cost`` permits of every other
    process, and by none in the last ``2 * LEASE_SHARE`` units of a window.
    A process that dies keeps its unspent permits counted until their
    sub-bucket leaves the window. Within one process nothing is rejected
    early. :meth:`peek` reports unspent permits as used.

    NOTE: one call touches the keys of several subjects, so it does not run on
    Redis Cluster, where all keys of a script must share a hash slot.
    """

    def __init__(
        self,
        client: redis.Redis,
        sub_buckets: int = 60,
        key_prefix: str = "fkod:rl:",
        *,
        lease_size: int = 1,
    ) -> None:
        validate_sub_buckets(sub_buckets)
        if not isinstance(key_prefix, str):
            raise TypeError(f"key_prefix must be a string, got {key_prefix!r}")
        self._client = client
        self._sub_buckets = sub_buckets
        self._key_prefix = key_prefix
        # In redis-py (checked in 8.2), Script.__call__ sends EVALSHA and, on a
        # NOSCRIPT error, loads the script and sends EVALSHA again.
        self._script = client.register_script(_SCRIPT)

        self._lease_size = 1
        self.set_lease_size(lease_size)
        self._slots: dict[tuple[LimitCheck, ...], _LeaseSlot] = {}
        self._slots_lock = threading.Lock()
        # Min-heap of (deadline, sequence, slot key, lease) for finding expired leases.
        self._expiries: list[tuple[float, int, tuple[LimitCheck, ...], _Lease]] = []
        self._sequence = itertools.count()

    @property
    def key_prefix(self) -> str:
        """Prefix of every Redis key this limiter writes."""
        return self._key_prefix

    @property
    def lease_size(self) -> int:
        """Maximum permits one lease takes; 1 means no leasing."""
        return self._lease_size

    def set_lease_size(self, lease_size: int) -> None:
        """Set the maximum permits per lease, from 1 (no leasing) to MAX_LEASE_SIZE.

        Call it before the first hit. Raises ValueError for another value.
        """
        if not isinstance(lease_size, int) or isinstance(lease_size, bool) or \
                not 1 <= lease_size <= MAX_LEASE_SIZE:
            raise ValueError(
                f"lease_size must be an integer from 1 to {MAX_LEASE_SIZE}, got {lease_size!r}"
            )
        self._lease_size = lease_size

    def key_for(self, subject: str) -> str:
        """Return the Redis key that stores the counts of ``subject``."""
        return self._key_prefix + subject

    def hit(self, checks: Sequence[LimitCheck], cost: int = 1) -> RateLimitDecision:
        """Count ``cost`` in all windows of ``checks``, or in none if any window rejects it."""
        checks = validate_checks(checks)
        validate_cost(cost)
        if not checks:
            return UNLIMITED
        if self._lease_size == 1:
            allowed, usages, _extra = self._run("hit", checks, cost)
            return summarize(allowed, usages)
        return self._hit_leased(tuple(checks), cost)

    def peek(self, checks: Sequence[LimitCheck]) -> RateLimitDecision:
        """Return the decision a hit of cost 1 would get now, without writing to Redis."""
        checks = validate_checks(checks)
        if not checks:
            return UNLIMITED
        allowed, usages, _extra = self._run("peek", checks, 1)
        return summarize(allowed, usages)

    def reset(self, subject: str) -> None:
        """Delete the counts of ``subject`` from Redis and drop this process's leases on it."""
        self._drop_leases_on(subject)
        try:
            self._client.delete(self.key_for(subject))
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
            raise RateLimiterUnavailable(
                f"failed to reset rate limit subject {subject!r} in Redis: {error}"
            ) from error

    def close(self) -> None:
        """Return the unspent permits of live leases, then close the Redis client."""
        try:
            self._return_all_leases()
        finally:
            self._client.close()

    # Leasing -----------------------------------------------------------------

    def _hit_leased(self, key: tuple[LimitCheck, ...], cost: int) -> RateLimitDecision:
        while True:
            slot = self._slot(key)
            with slot.lock:
                if slot.retired:
                    continue
                lease = slot.lease
                if lease is not None and lease.deadline > time.monotonic() \
                        and lease.unspent >= cost:
                    lease.unspent -= cost
                    return lease.decision()

                refunds: list[_Refund] = []
                if lease is not None:
                    slot.lease = None
                    refunds.extend(self._refunds_of(lease))
                refunds.extend(self._collect_expired(slot))
                try:
                    decision, lease = self._take_lease(key, cost, refunds)
                except BaseException:
                    self._retire(key, slot)
                    raise
                if lease is None:
                    self._retire(key, slot)
                    return decision

                slot.lease = lease
                with self._slots_lock:
                    heapq.heappush(self._expiries,
                                   (lease.deadline, next(self._sequence), key, lease))
                return decision

    def _slot(self, key: tuple[LimitCheck, ...]) -> _LeaseSlot:
        with self._slots_lock:
            slot = self._slots.get(key)
            if slot is None:
                slot = _LeaseSlot()
                self._slots[key] = slot
            return slot

    def _retire(self, key: tuple[LimitCheck, ...], slot: _LeaseSlot) -> None:
        # Called with slot.lock held. A thread that waited for the lock sees
        # retired and looks the slot up again.
        slot.retired = True
        with self._slots_lock:
            if self._slots.get(key) is slot:
                del self._slots[key]

    def _take_lease(
        self, key: tuple[LimitCheck, ...], cost: int, refunds: list[_Refund]
    ) -> tuple[RateLimitDecision, _Lease | None]:
        token = secrets.token_hex(8)
        # The deadline counts from before the call, so it never ends later
        # than the sub-bucket on the Redis server's clock.
        started = time.monotonic()
        allowed, usages, (granted, now_ms, lease_end_ms) = self._run(
            "lease", list(key), cost, refunds=refunds, token=token
        )
        if not allowed or granted <= cost:
            return summarize(allowed, usages), None

        # The usages count the whole grant, and the lease's decision reports
        # its unspent permits as free.
        lease = _Lease(
            checks=key,
            token=token,
            usages=usages,
            unspent=granted - cost,
            deadline=started + (lease_end_ms - now_ms) / 1000,
            granted_ms=now_ms,
        )
        return lease.decision(), lease

    def _refunds_of(self, lease: _Lease) -> list[_Refund]:
        if lease.unspent <= 0:
            return []
        refunds = []
        seen: set[tuple[str, int]] = set()
        for check in lease.checks:
            subject_window = (check.subject, check.window_seconds)
            if subject_window in seen:
                continue
            seen.add(subject_window)
            index = bucket_index(lease.granted_ms, check.window_seconds, self._sub_buckets)
            refunds.append((self.key_for(check.subject), lease.token, check.window_seconds,
                            index, lease.unspent))
        return refunds

    def _collect_expired(self, own: _LeaseSlot | None) -> list[_Refund]:
        """Take up to MAX_REFUNDS_PER_CALL expired leases of other slots and return their refunds.

        A slot whose lock is held is skipped, because its holder renews the
        lease and returns the permits itself.
        """
        now = time.monotonic()
        expired = []
        with self._slots_lock:
            while self._expiries and self._expiries[0][0] <= now \
                    and len(expired) < MAX_REFUNDS_PER_CALL:
                _deadline, _sequence, key, lease = heapq.heappop(self._expiries)
                expired.append((key, lease))

        refunds: list[_Refund] = []
        for key, lease in expired:
            with self._slots_lock:
                slot = self._slots.get(key)
            if slot is None or slot is own or not slot.lock.acquire(blocking=False):
                continue
            try:
                if slot.lease is lease:
                    slot.lease = None
                    refunds.extend(self._refunds_of(lease))
                    self._retire(key, slot)
            finally:
                slot.lock.release()
        return refunds

    def _drop_leases_on(self, subject: str) -> None:
        with self._slots_lock:
            slots = [(key, slot) for key, slot in self._slots.items()
                     if any(check.subject == subject for check in key)]
        for key, slot in slots:
            with slot.lock:
                slot.lease = None
                self._retire(key, slot)

    def _return_all_leases(self) -> None:
        with self._slots_lock:
            slots = list(self._slots.items())
            self._expiries.clear()
        refunds: list[_Refund] = []
        for key, slot in slots:
            with slot.lock:
                if slot.lease is not None:
                    refunds.extend(self._refunds_of(slot.lease))
                    slot.lease = None
                self._retire(key, slot)
        if not refunds:
            return
        try:
            self._run("refund", [], 1, refunds=refunds)
        except RateLimiterUnavailable as error:
            logger.warning("failed to return %d unspent leased permits on close: %s",
                           len(refunds), error)

    # Script calls ---------------------------------------------------------------

    def _run(
        self,
        mode: str,
        checks: list[LimitCheck],
        cost: int,
        *,
        refunds: Sequence[_Refund] = (),
        token: str = "",
    ) -> tuple[bool, list[WindowUsage], list[int]]:
        """Run the script and return whether it admitted the call, and its windows.

        The third value lists what mode "lease" appends to the reply.
        """
        keys = [self.key_for(check.subject) for check in checks]
        args: list[str | int] = [mode, cost, self._sub_buckets, len(checks), self._lease_size,
                                 token]
        for check in checks:
            args.append(check.limit)
            args.append(check.window_seconds)
        args.append(len(refunds))
        for refund_key, refund_token, window, index, amount in refunds:
            keys.append(refund_key)
            args.extend((len(keys), refund_token, window, index, amount))

        try:
            reply = self._script(keys=keys, args=args)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
            if refunds:
                logger.debug("dropped %d lease refunds because Redis failed", len(refunds))
            raise RateLimiterUnavailable(f"Redis rate limiter script failed: {error}") from error

        extra_length = 3 if mode == "lease" else 0
        expected_length = 1 + 3 * len(checks) + extra_length
        if not isinstance(reply, list) or len(reply) != expected_length:
            raise RuntimeError(
                f"Internal error: the rate limit script returned {reply!r}, "
                f"expected a list of {expected_length} integers"
            )
        usages = []
        for position, check in enumerate(checks):
            offset = 1 + 3 * position
            usages.append(
                WindowUsage(
                    check=check,
                    used=int(reply[offset]),
                    reset_ms=int(reply[offset + 1]),
                    wait_ms=int(reply[offset + 2]),
                )
            )
        extra = [int(value) for value in reply[1 + 3 * len(checks):]]
        return bool(reply[0]), usages, extra
