-- palisade: one request's counter operations, atomically, in one call.
--
-- ARGV[1] is the time in microseconds, or "" to take it from Redis TIME
-- (what palisade does in production, so replicas' clocks never matter).
-- Then, per operation, an opcode and its arguments; KEYS are consumed in
-- order. Times are microseconds throughout: Lua numbers are doubles,
-- exact to 2^53.
--
-- Counts, distinct-count bookkeeping and decayed sums are fields of a
-- group hash (one per scope, e.g. one client address): a group is read
-- once per call with HGETALL, however many of its counters the request
-- needs, because each redis.call costs far more than the command itself.
-- Bans are fields too, holding their end time. GCRA state and
-- HyperLogLogs are keys of their own.
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

-- Group hashes read so far: name -> { fields = {...}, ttl = ms to keep it }.
local groups = {}

local function group(name)
  local g = groups[name]
  if not g then
    local flat = redis.call('HGETALL', name)
    local fields = {}
    for n = 1, #flat, 2 do
      fields[flat[n]] = flat[n + 1]
    end
    g = { fields = fields, ttl = 0 }
    groups[name] = g
  end
  return g
end

local function field(g, name, default)
  return tonumber(g.fields[name]) or default
end

-- A group written by this call lives at least `ttl` ms from now.
local function keep(g, ttl)
  if ttl > g.ttl then g.ttl = ttl end
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
    -- Sliding-window count: the current and previous fixed windows, as
    -- fields NAME.i (window), NAME.c (current), NAME.p (previous). A
    -- missing counter holds window -1, so the first add starts a window.
    local name, width, add = ARGV[a + 1], tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
    local key = KEYS[k]
    local g = group(key)
    local fi, fc, fp = name .. '.i', name .. '.c', name .. '.p'
    local i, c, p = field(g, fi, -1), field(g, fc, 0), field(g, fp, 0)
    if add > 0 then
      local index = math.floor(now / width)
      if index == i then
        c = redis.call('HINCRBY', key, fc, add)
      else
        if index == i + 1 then p = c else p = 0 end
        c = add
        i = index
        redis.call('HSET', key, fi, fmt(i), fc, fmt(c), fp, fmt(p))
      end
      g.fields[fi], g.fields[fc], g.fields[fp] = fmt(i), fmt(c), fmt(p)
      keep(g, ms(2 * width) + 1000)
    end
    reply[#reply + 1] = { i, c, p }
    a, k = a + 4, k + 1
  elseif op == 'd' or op == 'h' then
    -- Distinct count over the current and previous windows: two
    -- HyperLogLogs used in turn; which window each holds is in the group
    -- (fields NAME.e and NAME.o). 'h' adds only to a sketch already held:
    -- one never held reads 1 (the item alone) and is not created.
    local name, width, item = ARGV[a + 1], tonumber(ARGV[a + 2]), ARGV[a + 3]
    local key, even, odd = KEYS[k], KEYS[k + 1], KEYS[k + 2]
    local g = group(key)
    local index = math.floor(now / width)
    local held_even, held_odd = field(g, name .. '.e', -1), field(g, name .. '.o', -1)
    local current, previous, current_held, previous_held, slot
    if index % 2 == 0 then
      current, previous, current_held, previous_held, slot = even, odd, held_even, held_odd, name .. '.e'
    else
      current, previous, current_held, previous_held, slot = odd, even, held_odd, held_even, name .. '.o'
    end
    local unheld = op == 'h' and held_even == -1 and held_odd == -1
    if unheld then
      reply[#reply + 1] = 1
    elseif item ~= '' then
      if current_held ~= index then
        -- A new window: start its sketch; it and the group (which says
        -- which window the sketch holds) live until the next window ends.
        local ttl = ms(2 * width) + 1000
        redis.call('DEL', current)
        redis.call('HSET', key, slot, fmt(index))
        g.fields[slot] = fmt(index)
        current_held = index
        redis.call('PFADD', current, item)
        redis.call('PEXPIRE', current, ttl)
        keep(g, ttl)
      else
        redis.call('PFADD', current, item)
      end
    end
    if not unheld then
      local counted = {}
      if current_held == index then counted[#counted + 1] = current end
      if previous_held == index - 1 then counted[#counted + 1] = previous end
      if #counted == 0 then
        reply[#reply + 1] = 0
      else
        reply[#reply + 1] = redis.call('PFCOUNT', unpack(counted))
      end
    end
    a, k = a + 4, k + 3
  elseif op == 'y' then
    -- Exponentially decayed sum: fields NAME.v (value) and NAME.t (when).
    local name, half_life, add = ARGV[a + 1], tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
    local key = KEYS[k]
    local g = group(key)
    local fv, ft = name .. '.v', name .. '.t'
    local v, at = field(g, fv, 0), field(g, ft, 0)
    local value = v * math.exp(-math.max(now - at, 0) / half_life * math.log(2))
    if add ~= 0 then
      value = value + add
      local v_text, t_text = string.format('%.17g', value), fmt(math.max(at, now))
      redis.call('HSET', key, fv, v_text, ft, t_text)
      g.fields[fv], g.fields[ft] = v_text, t_text
      keep(g, ms(20 * half_life) + 1000)
    end
    reply[#reply + 1] = string.format('%.17g', value)
    a, k = a + 4, k + 1
  elseif op == 'r' then
    -- Rhythm of arrivals: fields NAME.t (last arrival), NAME.n (gaps, at
    -- most SPAN), NAME.m and NAME.q (running means of the gap and of its
    -- square). The same update as `Rhythm::arrive` in window.rs; Rust
    -- turns the reply { n, m, q } into the reading.
    local name, window = ARGV[a + 1], tonumber(ARGV[a + 2])
    local key = KEYS[k]
    local g = group(key)
    local ft, fn, fm, fq = name .. '.t', name .. '.n', name .. '.m', name .. '.q'
    local last, n, m, q = field(g, ft, 0), field(g, fn, 0), field(g, fm, 0), field(g, fq, 0)
    local gap = now - last
    if last == 0 or gap > window or gap < 0 then
      n, m, q = 0, 0, 0
    else
      n = math.min(n + 1, 16) -- RHYTHM_SPAN
      local w = 1 / n
      m = m + w * (gap - m)
      q = q + w * (gap * gap - q)
    end
    local m_text, q_text = string.format('%.17g', m), string.format('%.17g', q)
    redis.call('HSET', key, ft, fmt(now), fn, fmt(n), fm, m_text, fq, q_text)
    g.fields[ft], g.fields[fn], g.fields[fm], g.fields[fq] = fmt(now), fmt(n), m_text, q_text
    keep(g, ms(window) + 1000)
    reply[#reply + 1] = { n, m_text, q_text }
    a, k = a + 3, k + 1
  elseif op == 'b' then
    -- Ban check: microseconds left, 0 when none. A ban is a field of its
    -- scope's group holding its end time (NAME, e.g. `ban`); the group
    -- lives at least as long as the ban.
    local name = ARGV[a + 1]
    local left = field(group(KEYS[k]), name, 0) - now
    if left < 0 then left = 0 end
    reply[#reply + 1] = left
    a, k = a + 2, k + 1
  elseif op == 'B' then
    -- Ban: extend, never shorten. The reason (a detection id) is the field
    -- NAME.why; the shard's ban index (a sorted set by end time) lists the
    -- ban for the admin API and forgets bans that have run out.
    local name, ttl, why, member = ARGV[a + 1], tonumber(ARGV[a + 2]), ARGV[a + 3], ARGV[a + 4]
    local key, index = KEYS[k], KEYS[k + 1]
    local g = group(key)
    local ends = now + ttl
    if field(g, name, 0) < ends then
      redis.call('HSET', key, name, fmt(ends), name .. '.why', why)
      g.fields[name] = fmt(ends)
      keep(g, ms(ttl) + 1000)
      redis.call('ZADD', index, fmt(ends), member)
      redis.call('ZREMRANGEBYSCORE', index, '-inf', fmt(now))
      if redis.call('PEXPIRE', index, ms(ttl) + 1000, 'GT') == 0 then
        redis.call('PEXPIRE', index, ms(ttl) + 1000, 'NX')
      end
    end
    reply[#reply + 1] = 0
    a, k = a + 5, k + 2
  else
    return redis.error_reply('palisade: unknown counter operation ' .. tostring(op))
  end
end

-- Every group written lives as long as its longest-lived counter needs:
-- extend its TTL (GT), or give it one if it has none (NX); never shorten.
for name, g in pairs(groups) do
  if g.ttl > 0 and redis.call('PEXPIRE', name, g.ttl, 'GT') == 0 then
    redis.call('PEXPIRE', name, g.ttl, 'NX')
  end
end

return reply
