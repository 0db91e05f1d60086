"""Rate limiter whose counts live in Redis, shared by every process and host.

Each subject is one Redis hash at ``key_prefix + subject``. A field
``"<window seconds>:<sub-bucket index>"`` stores the units counted in that
sub-bucket, so a subject has at most about ``sub_buckets`` fields per window
length, whatever the limit. One Lua script measures and updates all windows of
a call atomically and takes the time from the Redis server, so hosts with
skewed clocks still agree.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import redis

from fkod.core.ratelimit.base import (
    UNLIMITED,
    LimitCheck,
    RateLimitDecision,
    RateLimiter,
    RateLimiterUnavailable,
    WindowUsage,
    summarize,
    validate_checks,
    validate_cost,
    validate_sub_buckets,
)

logger = logging.getLogger(__name__)

# The script repeats the arithmetic of base.bucket_index, base.bucket_start_ms
# and base.measure_window. Lua numbers are doubles, so floor_div corrects the
# rounding of a / b and every product stays below 2**53 (see MAX_SUB_BUCKETS).
#
# KEYS[i]   hash of the subject of check i. Several checks may name one key.
# ARGV[1]   mode: "hit" counts when every window accepts, "peek" never writes.
#           Another mode (for example leasing a batch of permits) can reuse
#           load_subject, measure and count_window.
# ARGV[2]   cost, an integer >= 1
# ARGV[3]   sub-buckets per window
# ARGV[2 + 2i], ARGV[3 + 2i]   limit and window seconds of check i
#
# Returns {allowed, used_1, reset_ms_1, wait_ms_1, used_2, ...} where used
# includes the cost when the call was counted.
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

local server_time = redis.call('TIME')
local now_ms = tonumber(server_time[1]) * 1000 + math.floor(tonumber(server_time[2]) / 1000)

local function bucket_index(window)
  return floor_div(now_ms * sub_buckets, window * 1000)
end

local function bucket_start(index, window)
  return ceil_div(index * window * 1000, sub_buckets)
end

-- Reads a subject hash once per call. Live sub-buckets are grouped by window
-- length and sorted oldest first. Expired and unparsable fields are collected
-- for deletion. A sub-bucket from a later index than now (the server clock
-- went back) stays live so that quota is never freed early.
local subjects = {}
local function load_subject(key)
  local state = subjects[key]
  if state then
    return state
  end
  state = {windows = {}, stale = {}, ttl_ms = 0}
  local flat = redis.call('HGETALL', key)
  for i = 1, #flat, 2 do
    local field = flat[i]
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

-- Adds the cost to the current sub-bucket of one window, once per subject and
-- window length, and records the expiry the subject hash needs.
local function count_window(key, window)
  local state = subjects[key]
  state.counted = state.counted or {}
  if state.counted[window] then
    return
  end
  state.counted[window] = true
  redis.call('HINCRBY', key, window .. ':' .. bucket_index(window), cost)
  local ttl_ms = window * 1000 + ceil_div(window * 1000, sub_buckets)
  if ttl_ms > state.ttl_ms then
    state.ttl_ms = ttl_ms
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
for i = 1, #KEYS do
  local limit = tonumber(ARGV[2 + 2 * i])
  local window = tonumber(ARGV[3 + 2 * i])
  local state = load_subject(KEYS[i])
  local used, reset_ms, wait_ms = measure(state.windows[window] or {}, limit, window)
  if wait_ms > 0 then
    allowed = 0
  end
  results[i] = {used, reset_ms, wait_ms}
end

if mode == 'hit' and allowed == 1 then
  for i = 1, #KEYS do
    local window = tonumber(ARGV[3 + 2 * i])
    count_window(KEYS[i], window)
    local result = results[i]
    if result[1] == 0 then
      result[2] = bucket_start(bucket_index(window) + sub_buckets, window)
    end
    result[1] = result[1] + cost
  end
  for key, _ in pairs(subjects) do
    if subjects[key].counted then
      finish_subject(key)
    end
  end
end

local reply = {allowed}
for i = 1, #KEYS do
  reply[#reply + 1] = results[i][1]
  reply[#reply + 1] = results[i][2]
  reply[#reply + 1] = results[i][3]
end
return reply
"""


class RedisRateLimiter(RateLimiter):
    """Sliding-window limiter shared through Redis, one script call per request.

    ``client`` is used as given, including its timeouts and retry policy.
    Connection failures and timeouts raise :class:`RateLimiterUnavailable`.
    Redis errors of any other kind (for example a script error) propagate
    unchanged. The script needs Redis 3.2 or later and was tested with Redis
    7.0 only. :meth:`close` closes ``client``.

    NOTE: one call touches the keys of several subjects, so it does not run on
    Redis Cluster, where all keys of a script must share a hash slot.
    """

    # TODO: permits are not leased yet, so every hit and peek costs one Redis
    # round trip. Leasing would add a script mode that counts a batch at once.

    def __init__(
        self,
        client: redis.Redis,
        sub_buckets: int = 60,
        key_prefix: str = "fkod:rl:",
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

    @property
    def key_prefix(self) -> str:
        """Prefix of every Redis key this limiter writes."""
        return self._key_prefix

    def key_for(self, subject: str) -> str:
        """Return the Redis key that stores the counts of ``subject``."""
        return self._key_prefix + subject

    def hit(self, checks: Sequence[LimitCheck], cost: int = 1) -> RateLimitDecision:
        """Count ``cost`` in all windows of ``checks``, or in none if any window rejects it."""
        checks = validate_checks(checks)
        validate_cost(cost)
        if not checks:
            return UNLIMITED
        return self._run("hit", checks, cost)

    def peek(self, checks: Sequence[LimitCheck]) -> RateLimitDecision:
        """Return the decision a hit of cost 1 would get now, without writing to Redis."""
        checks = validate_checks(checks)
        if not checks:
            return UNLIMITED
        return self._run("peek", checks, 1)

    def reset(self, subject: str) -> None:
        """Delete the counts of ``subject`` from Redis."""
        try:
            self._client.delete(self.key_for(subject))
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
            raise RateLimiterUnavailable(
                f"failed to reset rate limit subject {subject!r} in Redis: {error}"
            ) from error

    def close(self) -> None:
        """Close the Redis client passed to the constructor."""
        self._client.close()

    def _run(self, mode: str, checks: list[LimitCheck], cost: int) -> RateLimitDecision:
        keys = [self.key_for(check.subject) for check in checks]
        args: list[str | int] = [mode, cost, self._sub_buckets]
        for check in checks:
            args.append(check.limit)
            args.append(check.window_seconds)

        try:
            reply = self._script(keys=keys, args=args)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
            raise RateLimiterUnavailable(f"Redis rate limiter script failed: {error}") from error

        expected_length = 1 + 3 * len(checks)
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
        return summarize(bool(reply[0]), usages)
