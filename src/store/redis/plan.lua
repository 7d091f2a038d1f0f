-- palisade: one request's counter operations, atomically, in one call.
--
-- ARGV[1] is the time in microseconds, or "" to take it from Redis TIME
-- (what palisade does in production, so replicas' clocks never matter).
-- Then, per operation, an opcode and its arguments; KEYS are consumed in
-- order (one per operation, three for a distinct count). Times are
-- microseconds throughout: Lua numbers are doubles, exact to 2^53.
--
-- The reply is { now_us, reply of op 1, reply of op 2, ... }. Raw window
-- state is returned rather than estimates, so Rust computes the numbers
-- with the same code as the in-process store.

local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[1])
end

local function ms(us)
  return math.ceil(us / 1000)
end

local function fmt(n)
  return string.format('%.0f', n)
end

local reply = { now }
local a, k = 2, 1

while a <= #ARGV do
  local op = ARGV[a]
  if op == 'g' then
    -- GCRA, as governor runs it: emission interval t, tolerance tau.
    local t, tau = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
    local key = KEYS[k]
    local tat = tonumber(redis.call('GET', key)) or now
    local earliest = tat - tau
    if now < earliest then
      reply[#reply + 1] = { 0, earliest - now }
    else
      local next_tat = math.max(tat, now) + t
      redis.call('SET', key, fmt(next_tat), 'PX', ms(next_tat - now) + 10000)
      reply[#reply + 1] = { 1, 0 }
    end
    a, k = a + 3, k + 1
  elseif op == 'c' then
    -- Sliding-window count: the current and previous fixed windows.
    local width, add = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
    local key = KEYS[k]
    local state = redis.call('HMGET', key, 'i', 'c', 'p')
    -- A missing key holds window -1, so the first add always starts a window.
    local i, c, p = tonumber(state[1]) or -1, tonumber(state[2]) or 0, tonumber(state[3]) or 0
    if add > 0 then
      local index = math.floor(now / width)
      if index == i then
        c = redis.call('HINCRBY', key, 'c', add)
      else
        -- A new window: its key lives until the next window ends.
        if index == i + 1 then p = c else p = 0 end
        c = add
        i = index
        redis.call('HSET', key, 'i', fmt(i), 'c', fmt(c), 'p', fmt(p))
        redis.call('PEXPIRE', key, ms(2 * width) + 1000)
      end
    end
    reply[#reply + 1] = { i, c, p }
    a, k = a + 3, k + 1
  elseif op == 'd' then
    -- Distinct count over the current and previous windows: two
    -- HyperLogLogs used in turn, and which window each one holds.
    local width, item = tonumber(ARGV[a + 1]), ARGV[a + 2]
    local meta, even, odd = KEYS[k], KEYS[k + 1], KEYS[k + 2]
    local index = math.floor(now / width)
    local held = redis.call('HMGET', meta, 'e', 'o')
    local held_even, held_odd = tonumber(held[1]) or -1, tonumber(held[2]) or -1
    local current, previous, current_held, previous_held, field
    if index % 2 == 0 then
      current, previous, current_held, previous_held, field = even, odd, held_even, held_odd, 'e'
    else
      current, previous, current_held, previous_held, field = odd, even, held_odd, held_even, 'o'
    end
    if item ~= '' then
      if current_held ~= index then
        -- A new window: start its sketch; both keys live until the next
        -- window ends.
        redis.call('DEL', current)
        redis.call('HSET', meta, field, fmt(index))
        current_held = index
        redis.call('PFADD', current, item)
        local ttl = ms(2 * width) + 1000
        redis.call('PEXPIRE', current, ttl)
        redis.call('PEXPIRE', meta, ttl)
      else
        redis.call('PFADD', current, item)
      end
    end
    local counted = {}
    if current_held == index then counted[#counted + 1] = current end
    if previous_held == index - 1 then counted[#counted + 1] = previous end
    if #counted == 0 then
      reply[#reply + 1] = 0
    else
      reply[#reply + 1] = redis.call('PFCOUNT', unpack(counted))
    end
    a, k = a + 3, k + 3
  elseif op == 'y' then
    -- Exponentially decayed sum.
    local half_life, add = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
    local key = KEYS[k]
    local state = redis.call('HMGET', key, 'v', 't')
    local v, at = tonumber(state[1]) or 0, tonumber(state[2]) or 0
    local value = v * math.exp(-math.max(now - at, 0) / half_life * math.log(2))
    if add ~= 0 then
      value = value + add
      redis.call('HSET', key, 'v', string.format('%.17g', value), 't', fmt(math.max(at, now)))
      redis.call('PEXPIRE', key, ms(20 * half_life) + 1000)
    end
    reply[#reply + 1] = string.format('%.17g', value)
    a, k = a + 3, k + 1
  elseif op == 'b' then
    -- Ban check: microseconds left, 0 when none. A ban key holds its end
    -- time (and expires with it).
    local left = (tonumber(redis.call('GET', KEYS[k])) or 0) - now
    if left < 0 then left = 0 end
    reply[#reply + 1] = left
    a, k = a + 1, k + 1
  elseif op == 'B' then
    -- Ban: extend, never shorten.
    local ttl = tonumber(ARGV[a + 1])
    local ends = now + ttl
    if (tonumber(redis.call('GET', KEYS[k])) or 0) < ends then
      redis.call('SET', KEYS[k], fmt(ends), 'PX', ms(ttl))
    end
    reply[#reply + 1] = 0
    a, k = a + 2, k + 1
  else
    return redis.error_reply('palisade: unknown counter operation ' .. tostring(op))
  end
end

return reply
