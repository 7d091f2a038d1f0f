-- palisade: one request's counter operations, atomically, in one call.
--
-- ARGV[1] is the time in microseconds, or "" to take it from Redis TIME
-- (what palisade does in production, so replicas' clocks never matter).
-- Then, per operation, an opcode and its arguments; KEYS are consumed in
-- order. Times are microseconds throughout: Lua numbers are doubles,
-- exact to 2^53.
--
-- Counts, distinct-count bookkeeping, decayed sums, rhythms and bans are
-- fields of a group hash (one per scope, e.g. one client address). The
-- caller sends the operations of one group together, after a 'G' that
-- names the group's key: the group is read once (HGETALL), its counters
-- are updated in Lua, and whatever changed is written back with one HSET
-- when the next group starts (or at the end), because each redis.call
-- costs far more than the command itself. GCRA state and HyperLogLogs are
-- keys of their own.
--
-- Every group written lives at least as long as its longest-lived counter
-- needs from now (two windows, twenty half-lives, a ban's length). The
-- expiry last set is kept in the group (field '@expires', ms), so a write
-- that does not need a longer life costs no PEXPIRE; a counter's life is
-- extended by an eighth more than it needs, so that most writes need none.
-- A ban's group is not: it expires with the ban (and a second).
--
-- The reply is one string of values separated by spaces: now_us, the
-- values of op 1, of op 2, ..., each operation adding a fixed number of
-- values (see script.rs), '-' for a field not stored. One string rather
-- than an array of values: the client parses each value of an array at a
-- cost that, for a login's fifty, rivalled the script's own. Raw window
-- state is returned rather than estimates, so Rust computes the numbers
-- with the same code as the in-process store.

local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[1])
end
local now_ms = math.floor(now / 1000)

local function ms(us)
  return math.ceil(us / 1000)
end

local function fmt(n)
  return string.format('%.0f', n)
end

-- The current group: its key, its fields (name -> text), the fields
-- changed (name -> true), and how long it must live from now (ms): `need`
-- at least, `want` when extending.
local key, fields, dirty, need, want

local function flush()
  if not key then return end
  local extend = need > 0 and now_ms + need > (tonumber(fields['@expires']) or 0)
  if extend then
    fields['@expires'] = fmt(now_ms + want)
    dirty['@expires'] = true
  end
  local args, n = { key }, 1
  for name in pairs(dirty) do
    args[n + 1], args[n + 2] = name, fields[name]
    n = n + 2
  end
  if n > 1 then
    redis.call('HSET', unpack(args))
  end
  -- After the HSET, which creates a group written for the first time.
  if extend and redis.call('PEXPIRE', key, want, 'GT') == 0 then
    redis.call('PEXPIRE', key, want, 'NX')
  end
  key = nil
end

-- A counter of the current group was written and must live `ttl` ms
-- from now; `slack` more is allowed.
local function keep(ttl, slack)
  if ttl > need then need = ttl end
  if ttl + slack > want then want = ttl + slack end
end

local function keep_counter(ttl)
  keep(ttl, math.ceil(ttl / 8))
end

local function field(name, default)
  return tonumber(fields[name]) or default
end

local function set(name, text)
  fields[name] = text
  dirty[name] = true
end

local reply, r = { now }, 1
local a, k = 2, 1

while a <= #ARGV do
  local op = ARGV[a]
  if op == 'G' then
    -- The operations that follow, up to the next 'G' or 'g', use this group.
    flush()
    key = KEYS[k]
    local flat = redis.call('HGETALL', key)
    fields, dirty, need, want = {}, {}, 0, 0
    for n = 1, #flat, 2 do
      fields[flat[n]] = flat[n + 1]
    end
    a, k = a + 1, k + 1
  elseif op == 'g' then
    -- GCRA, as governor runs it: emission interval t, tolerance tau.
    flush()
    local t, tau = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
    local gk = KEYS[k]
    local tat = tonumber(redis.call('GET', gk)) or now
    local earliest = tat - tau
    if now < earliest then
      reply[r + 1], reply[r + 2] = 0, fmt(earliest - now)
    else
      local next_tat = math.max(tat, now) + t
      redis.call('SET', gk, fmt(next_tat), 'PX', ms(next_tat - now) + 10000)
      reply[r + 1], reply[r + 2] = 1, 0
    end
    r = r + 2
    a, k = a + 3, k + 1
  elseif op == 'c' then
    -- Sliding-window count: the current and previous fixed windows, as
    -- fields NAME.i (window), NAME.c (current), NAME.p (previous). A
    -- missing counter holds window -1, so the first add starts a window.
    local name, width, add = ARGV[a + 1], tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
    local fi, fc, fp = name .. '.i', name .. '.c', name .. '.p'
    local i, c, p = field(fi, -1), field(fc, 0), field(fp, 0)
    if add > 0 then
      local index = math.floor(now / width)
      if index == i then
        c = c + add
        set(fc, fmt(c))
      else
        if index == i + 1 then p = c else p = 0 end
        c = add
        i = index
        set(fi, fmt(i))
        set(fc, fmt(c))
        set(fp, fmt(p))
      end
      keep_counter(ms(2 * width) + 1000)
    end
    -- Window numbers and counts are far below 1e14: table.concat writes
    -- them exactly (%.14g).
    reply[r + 1], reply[r + 2], reply[r + 3] = i, c, p
    r = r + 3
    a = a + 4
  elseif op == 'C' then
    -- A count only read: its three fields as stored ('-' when missing),
    -- for Rust to read as the 'c' reply.
    local name = ARGV[a + 1]
    reply[r + 1] = fields[name .. '.i'] or '-'
    reply[r + 2] = fields[name .. '.c'] or '-'
    reply[r + 3] = fields[name .. '.p'] or '-'
    r = r + 3
    a = a + 2
  elseif op == 'Y' then
    -- A decayed sum only read: NAME.v and NAME.t as stored; Rust decays it.
    local name = ARGV[a + 1]
    reply[r + 1] = fields[name .. '.v'] or '-'
    reply[r + 2] = fields[name .. '.t'] or '-'
    r = r + 2
    a = a + 2
  elseif op == 'd' or op == 'h' then
    -- Distinct count over the current and previous windows: two
    -- HyperLogLogs used in turn; which window each holds is in the group
    -- (fields NAME.e and NAME.o). 'h' adds only to a sketch already held:
    -- one never held reads 1 (the item alone) and is not created.
    --
    -- The count is kept in the group too (NAME.u, counted in window
    -- NAME.k): while no add changes a sketch (PFADD answers 0) and the
    -- window is the same, it is what PFCOUNT would answer, without the
    -- PFCOUNT (over two sketches, a merge of both).
    local name, width, item = ARGV[a + 1], tonumber(ARGV[a + 2]), ARGV[a + 3]
    local even, odd = KEYS[k], KEYS[k + 1]
    local index = math.floor(now / width)
    local held_even, held_odd = field(name .. '.e', -1), field(name .. '.o', -1)
    local current, previous, current_held, previous_held, slot
    if index % 2 == 0 then
      current, previous, current_held, previous_held, slot = even, odd, held_even, held_odd, name .. '.e'
    else
      current, previous, current_held, previous_held, slot = odd, even, held_odd, held_even, name .. '.o'
    end
    local unheld = op == 'h' and held_even == -1 and held_odd == -1
    if unheld then
      reply[r + 1] = 1
    else
      local changed = 0
      if item ~= '' then
        if current_held ~= index then
          -- A new window: start its sketch; it and the group (which says
          -- which window the sketch holds) live until the next window ends.
          local ttl = ms(2 * width) + 1000
          redis.call('DEL', current)
          set(slot, fmt(index))
          current_held = index
          redis.call('PFADD', current, item)
          redis.call('PEXPIRE', current, ttl)
          keep_counter(ttl)
          changed = 1
        else
          changed = redis.call('PFADD', current, item)
        end
      end
      local fk, fu = name .. '.k', name .. '.u'
      local counted
      if current_held == index and previous_held == index - 1 then
        counted = { current, previous }
      elseif current_held == index then
        counted = { current }
      elseif previous_held == index - 1 then
        counted = { previous }
      end
      if not counted then
        reply[r + 1] = 0
      elseif changed == 0 and field(fk, -1) == index and fields[fu] then
        reply[r + 1] = fields[fu]
      else
        -- A held sketch means the group exists with its TTL: the count
        -- can be kept in it.
        local count = redis.call('PFCOUNT', unpack(counted))
        set(fk, fmt(index))
        set(fu, fmt(count))
        reply[r + 1] = count
      end
    end
    r = r + 1
    a, k = a + 4, k + 2
  elseif op == 'y' then
    -- Exponentially decayed sum: fields NAME.v (value) and NAME.t (when).
    local name, half_life, add = ARGV[a + 1], tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
    local fv, ft = name .. '.v', name .. '.t'
    local v, at = field(fv, 0), field(ft, 0)
    local value = v * math.exp(-math.max(now - at, 0) / half_life * math.log(2))
    if add ~= 0 then value = value + add end
    local text = string.format('%.17g', value)
    if add ~= 0 then
      set(fv, text)
      set(ft, fmt(math.max(at, now)))
      keep_counter(ms(20 * half_life) + 1000)
    end
    reply[r + 1] = text
    r = r + 1
    a = a + 4
  elseif op == 'r' then
    -- Rhythm of arrivals: fields NAME.t (last arrival), NAME.n (gaps, at
    -- most SPAN), NAME.m and NAME.q (running means of the gap and of its
    -- square). The same update as `Rhythm::arrive` in window.rs; Rust
    -- turns the reply n, m, q into the reading.
    local name, window = ARGV[a + 1], tonumber(ARGV[a + 2])
    local ft, fn, fm, fq = name .. '.t', name .. '.n', name .. '.m', name .. '.q'
    local last, n, m, q = field(ft, 0), field(fn, 0), field(fm, 0), field(fq, 0)
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
    set(ft, fmt(now))
    set(fn, fmt(n))
    set(fm, m_text)
    set(fq, q_text)
    keep_counter(ms(window) + 1000)
    reply[r + 1], reply[r + 2], reply[r + 3] = n, m_text, q_text
    r = r + 3
    a = a + 3
  elseif op == 'b' then
    -- Ban check: microseconds left, 0 when none. A ban is a field of its
    -- scope's group holding its end time (NAME, e.g. `ban`).
    local left = field(ARGV[a + 1], 0) - now
    if left > 0 then reply[r + 1] = fmt(left) else reply[r + 1] = 0 end
    r = r + 1
    a = a + 2
  elseif op == 'B' then
    -- Ban: extend, never shorten. The reason (a detection id) is the field
    -- NAME.why; the shard's ban index (a sorted set by end time) lists the
    -- ban for the admin API and forgets bans that have run out. The group
    -- lives at least as long as the ban.
    local name, ttl, why, member = ARGV[a + 1], tonumber(ARGV[a + 2]), ARGV[a + 3], ARGV[a + 4]
    local index = KEYS[k]
    local ends = now + ttl
    if field(name, 0) < ends then
      set(name, fmt(ends))
      set(name .. '.why', why)
      keep(ms(ttl) + 1000, 0)
      redis.call('ZADD', index, fmt(ends), member)
      redis.call('ZREMRANGEBYSCORE', index, '-inf', fmt(now))
      if redis.call('PEXPIRE', index, ms(ttl) + 1000, 'GT') == 0 then
        redis.call('PEXPIRE', index, ms(ttl) + 1000, 'NX')
      end
    end
    reply[r + 1] = 0
    r = r + 1
    a, k = a + 5, k + 1
  else
    return redis.error_reply('palisade: unknown counter operation ' .. tostring(op))
  end
end
flush()

reply[1] = fmt(now)
return table.concat(reply, ' ', 1, r)
