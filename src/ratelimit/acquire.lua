-- ccsync: one permit from the limit shared by every replica, decided atomically (DESIGN §4).
-- Mirrors gcra_decide() in src/ratelimit/gcra.rs; the clock is Redis TIME, never the caller's, so
-- replicas with skewed clocks agree.
--
-- KEYS[1] GCRA theoretical arrival time (µs on the Redis clock)
-- KEYS[2] shared cool-down after a `throttled` 429 (exists while cooling down)
-- KEYS[3] today's request counter (the caller's UTC date is in the key)
-- ARGV[1] emission interval T (µs)   ARGV[2] burst tolerance τ (µs)
-- ARGV[3] daily limit for this kind of call (0: not counted, e.g. the token endpoint)
-- ARGV[4] TTL of the day counter (s)
--
-- Returns {status, value, used}:
--   {0, 0, used}    granted (used includes this call)
--   {1, µs, used}   the shared rate says wait this long, then ask again
--   {2, ms, used}   a shared cool-down is running for this long
--   {3, 0, used}    today's budget for this kind is spent
if redis.replicate_commands then pcall(redis.replicate_commands) end

local limit = tonumber(ARGV[3])
local used = 0
if limit > 0 then
  used = tonumber(redis.call('GET', KEYS[3]) or '0')
end

-- A spent day answers at once (the caller pauses until 00:00 UTC, it does not wait here).
if limit > 0 and used >= limit then return {3, 0, used} end

local cooling = redis.call('PTTL', KEYS[2])
if cooling == -1 then
  -- A cool-down without expiry would stop every replica forever: give it one.
  redis.call('PEXPIRE', KEYS[2], 1000)
  cooling = 1000
end
if cooling > 0 then return {2, cooling, used} end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local allow_at = tat - tolerance
if now < allow_at then return {1, allow_at - now, used} end

local new_tat = tat + interval
-- Keep the TAT only as long as it matters (plus a second): an expired key means "idle".
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX',
  math.ceil((new_tat - now) / 1000) + 1000)
if limit > 0 then
  used = redis.call('INCR', KEYS[3])
  if used == 1 then redis.call('EXPIRE', KEYS[3], ARGV[4]) end
end
return {0, 0, used}
