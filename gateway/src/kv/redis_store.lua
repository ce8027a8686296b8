-- The Redis side of the key-value store: each write that can need room, done
-- atomically with the plugin's accounting, so that replicas sharing the server share
-- the plugin's bounds. One script for every write (ARGV[1] names it): a replica loads
-- one SHA.
--
-- KEYS[1] the value; KEYS[2] the plugin's index (a sorted set: member = the plugin's
-- key, score = when its value expires in ms since the epoch, +inf for never);
-- KEYS[3] the plugin's sizes (a hash: member -> what it costs); KEYS[4] the bytes the
-- plugin holds in all (a string).
-- ARGV: 1 operation, 2 the plugin's key, 3 max entries, 4 max bytes, 5 cost of an
-- entry beyond its key and value, then:
--   set   6 value, 7 ttl ms ('' for none)                             -> 1 | -1 (full)
--   incr  6 delta, 7 ttl ms ('' for none)                 -> {1, new value} | {0} (full)
--   cas   6 new, 7 ttl ms, 8 '1' if a value is expected, 9 expected -> 1 | 0 | -1 (full)
--   del                                                               -> 1
--
-- Time is the server's (TIME), so replicas whose clocks differ agree on expiry.

local op, member = ARGV[1], ARGV[2]
local max_entries, max_bytes = tonumber(ARGV[3]), tonumber(ARGV[4])
local overhead = tonumber(ARGV[5])
local value_key, index, sizes, total = KEYS[1], KEYS[2], KEYS[3], KEYS[4]

-- Expired entries looked at on each write, and when a write finds the plugin full.
local SWEEP_STEP, SWEEP_WHEN_FULL = 4, 128

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Drops the accounting of the plugin's key `m`.
local function forget(m)
  local cost = redis.call('HGET', sizes, m)
  if cost then
    redis.call('HDEL', sizes, m)
    redis.call('DECRBY', total, cost)
  end
  redis.call('ZREM', index, m)
end

-- Drops the accounting of up to `n` values that have expired.
local function reclaim(now, n)
  local gone = redis.call('ZRANGEBYSCORE', index, '-inf', '(' .. string.format('%d', now),
    'LIMIT', 0, n)
  for _, m in ipairs(gone) do
    forget(m)
  end
end

-- Whether `entries` more entries and `bytes` more bytes fit the bounds; when they do
-- not, more expired values are reclaimed and the question asked again.
local function fits(entries, bytes, now)
  local function within()
    local held_entries = redis.call('ZCARD', index)
    local held_bytes = tonumber(redis.call('GET', total) or '0')
    return not ((entries > 0 and held_entries + entries > max_entries)
      or (bytes > 0 and held_bytes + bytes > max_bytes))
  end
  if within() then
    return true
  end
  reclaim(now, SWEEP_WHEN_FULL)
  return within()
end

-- What the live value at `member` costs (nil: none, or one without accounting, which
-- then counts as new); the stale accounting of an expired one is dropped.
local function current_cost(live)
  local cost = redis.call('HGET', sizes, member)
  if live then
    return tonumber(cost)
  end
  if cost then
    forget(member)
  end
  return nil
end

-- Stores `value` at `member`, expiring `ttl` ms from `now` ('' for never; `keep`:
-- as the value there does), charging the difference in cost. False when it does not
-- fit: nothing changed.
local function store(value, ttl, now, live, keep)
  local old = current_cost(live)
  local cost = #member + #value + overhead
  local entries, bytes = 1, cost
  if old then
    entries, bytes = 0, cost - old
  end
  if not fits(entries, bytes, now) then
    return false
  end
  local expires = '+inf'
  if keep then
    local at = redis.call('PEXPIRETIME', value_key)
    if at > 0 then
      expires = string.format('%d', at)
    end
    redis.call('SET', value_key, value, 'KEEPTTL')
  elseif ttl ~= '' then
    expires = string.format('%d', now + tonumber(ttl))
    redis.call('SET', value_key, value, 'PXAT', expires)
  else
    redis.call('SET', value_key, value)
  end
  redis.call('ZADD', index, expires, member)
  redis.call('HSET', sizes, member, cost)
  redis.call('INCRBY', total, bytes)
  return true
end

if op == 'incr' then
  local delta, ttl = ARGV[6], ARGV[7]
  local old = redis.call('GET', value_key)
  if old then
    -- A live counter (every request of a rate limit): one increment, and the
    -- accounting touched only when the number of digits changes.
    local new = redis.pcall('INCRBY', value_key, delta)
    if type(new) == 'number' then
      local text
      if math.abs(new) < 2 ^ 53 then
        text = string.format('%d', new)
      else
        text = redis.call('GET', value_key)
      end
      local grown = #text - #old
      if grown ~= 0 and redis.call('HEXISTS', sizes, member) == 1 then
        if grown > 0 and not fits(0, grown, now_ms()) then
          redis.call('SET', value_key, old, 'KEEPTTL')
          return { 0 }
        end
        redis.call('HINCRBY', sizes, member, grown)
        redis.call('INCRBY', total, grown)
      end
      return { 1, text }
    end
    -- Not an integer (it counts as 0), or past the s64 range (the sum saturates).
    local text = delta
    if string.find(new.err, 'overflow', 1, true) then
      if string.sub(delta, 1, 1) == '-' then
        text = '-9223372036854775808'
      else
        text = '9223372036854775807'
      end
    end
    if not store(text, '', now_ms(), true, true) then
      return { 0 }
    end
    return { 1, text }
  end
  local now = now_ms()
  reclaim(now, SWEEP_STEP)
  if not store(delta, ttl, now, false, false) then
    return { 0 }
  end
  return { 1, delta }
elseif op == 'set' then
  local now = now_ms()
  reclaim(now, SWEEP_STEP)
  local live = redis.call('EXISTS', value_key) == 1
  if not store(ARGV[6], ARGV[7], now, live, false) then
    return -1
  end
  return 1
elseif op == 'cas' then
  local current = redis.call('GET', value_key)
  if ARGV[8] == '1' then
    if current ~= ARGV[9] then
      return 0
    end
  elseif current then
    return 0
  end
  local now = now_ms()
  reclaim(now, SWEEP_STEP)
  if not store(ARGV[6], ARGV[7], now, current ~= false, false) then
    return -1
  end
  return 1
elseif op == 'del' then
  forget(member)
  redis.call('DEL', value_key)
  return 1
end
return redis.error_reply('weir kv: unknown operation ' .. tostring(op))
