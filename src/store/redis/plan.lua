-- palisade: one request's counter operations, atomically, in one call.
--
-- ARGV[1] is the time in microseconds, or "" to take it from Redis TIME
-- (what palisade does in production, so replicas' clocks never matter).
-- ARGV[2] is the number of groups and rate limits the call uses: their
-- keys are KEYS[1..ARGV[2]], in the order they are used, all read at once
-- (one MGET); then the shard's ban index when the call bans. Then, per
-- operation, an opcode and its arguments; a group whose operations are
-- sent exactly as the last group's were sends '=' instead (a login's four
-- credential scopes run the same ones: each argument costs Redis ~0.75k
-- instructions before the script starts). A distinct count's sketches
-- are named after its group's key (GROUP:NAME:e and GROUP:NAME:o), which
-- shares the group's hash tag, so they are not sent: each key sent costs
-- Redis about as much as a small command. Times are microseconds
-- throughout: Lua numbers are doubles, exact to 2^53.
--
-- Counts, distinct-count bookkeeping, decayed sums, rhythms and bans are
-- entries of a group (one per scope, e.g. one client address): one string
-- value, ";NAME=V1,V2,...;NAME=..." (a count's NAME=window,current,previous;
-- a decayed sum's NAME=value,when; ...). A string because each value a
-- script reads costs Redis far more than the command: a hash of seventeen
-- fields read with HGETALL into Lua took ~3 us, a GET of the same state
-- ~0.2 us. The caller sends the operations of one group together, after a
-- 'G' that names the group's key, or an 'R' when the caller also wants the
-- group as stored: then counters only read (ban checks, counts and
-- decayed sums) are not sent at all, and Rust reads them from the group's
-- text, so the script neither parses nor formats them. An entry is parsed
-- only when an operation needs it, and the group is written back (one SET)
-- when the next group starts, or at the end, if anything changed. GCRA
-- state and HyperLogLogs are keys of their own.
--
-- Every group written lives at least as long as its longest-lived counter
-- needs from now (two windows, twenty half-lives, a ban's length). The
-- expiry last set is kept in the group (entry '@', ms), so a write that
-- does not need a longer life keeps the TTL (SET KEEPTTL); a counter's life
-- is extended by an eighth more than it needs, so that most writes need
-- none. A ban's group is not: it expires with the ban (and a second).
--
-- The reply is one string of values separated by spaces: now_us, then per
-- 'R' group its text ('-' when there is none) and per operation its
-- values, each operation adding a fixed number of values (see script.rs),
-- '-' for a value not stored. One string rather than an array of values:
-- the client parses each value of an array at a cost that, for a login's
-- fifty, rivalled the script's own. Raw window state is returned rather
-- than estimates, so Rust computes the numbers with the same code as the
-- in-process store.

-- Numbers are written as text as little as possible, and values read as
-- text are passed on as text: Lua formats a number through sprintf, which
-- costs about as much as a small Redis command.
local function fmt(n)
  return string.format('%.0f', n)
end

local now, now_text
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  -- fmt(now)'s text, without a sprintf.
  now_text = t[1] .. string.rep('0', 6 - #t[2]) .. t[2]
else
  now, now_text = tonumber(ARGV[1]), ARGV[1]
end
local now_ms = math.floor(now / 1000)

local function ms(us)
  return math.ceil(us / 1000)
end

-- Windows by their width as sent (text): the width, the current window's
-- number and its text. Each count of a call that writes, and each distinct
-- count, needs them, and a call has few widths: Lua's tonumber parses a
-- string twice (strtod), and a login's calls parsed ~24 numbers each.
local windows = {}
local function window(width_text)
  local w = windows[width_text]
  if not w then
    local width = tonumber(width_text)
    local index = math.floor(now / width)
    w = { width, index, fmt(index) }
    windows[width_text] = w
  end
  return w
end

local find, sub, match = string.find, string.sub, string.match

-- The current group: its key, its text as read (false: none), the
-- entries parsed or set (name -> text, false: none), the entries changed
-- (name -> true), whether any did, and how long it must live from now
-- (ms): `need` at least, `want` when extending. The two tables are made
-- only when an entry is parsed or set: most groups of a login's request
-- need neither (a kept distinct count is found in the text), and two
-- tables a group, made and collected, cost ~10k instructions a login.
local key, raw, entries, dirty, changed, need, want

-- An entry's text, parsed from the group's only when first asked for.
local function get(name)
  local value = entries and entries[name]
  if value == nil then
    value = false
    if raw then
      local at = find(raw, ';' .. name .. '=', 1, true)
      if at then
        local from = at + #name + 2
        local to = find(raw, ';', from, true)
        value = sub(raw, from, (to or 0) - 1)
      end
    end
    if not entries then entries = {} end
    entries[name] = value
  end
  return value
end

local function set(name, text)
  if not entries then entries = {} end
  if not dirty then dirty = {} end
  entries[name] = text
  dirty[name] = true
  changed = true
end

local function flush()
  if not key then return end
  if changed then
    local expires = tonumber(get('@')) or 0
    local extend = need > 0 and now_ms + need > expires
    if extend then
      set('@', fmt(now_ms + want))
    end
    -- A group never written before gets a life from a counter that needs
    -- one; with none (a kept distinct count of a group gone), not written.
    if extend or raw then
      -- The entries changed are replaced where they stand (or appended),
      -- the rest of the text kept as read: cutting the whole text into
      -- its entries with a pattern and joining them again cost ~37k
      -- instructions a group, most of a merged write. Names are unique
      -- in a group (every writer writes this way), so the first
      -- ';NAME=' is the entry.
      local text = raw or ''
      for name in pairs(dirty) do
        local value = entries[name]
        if value then
          local head = ';' .. name .. '='
          local at = raw and find(text, head, 1, true)
          if at then
            local from = at + #head
            local to = find(text, ';', from, true)
            if to then
              text = sub(text, 1, from - 1) .. value .. sub(text, to)
            else
              text = sub(text, 1, from - 1) .. value
            end
          else
            text = text .. head .. value
          end
        end
      end
      if extend then
        redis.call('SET', key, text, 'PX', want)
      else
        redis.call('SET', key, text, 'KEEPTTL')
      end
    end
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

local units = tonumber(ARGV[2])
local stored_values = {}
if units > 0 then
  stored_values = redis.call('MGET', unpack(KEYS, 1, units))
end
-- Rate limits taken earlier in this call (key -> arrival time): a limit
-- taken twice in one call reads its own write, not the MGET's value.
local taken = {}

local reply, r = { now_text }, 1
local a, u, argc = 3, 0, #ARGV
-- The operations of the last group that sent its own (ARGV[from..to-1]),
-- and of the current group (where they start; nil when it repeats them).
-- A group whose first argument is '=' runs the last group's operations
-- again, on its own key: the ops are run from `from`, and at `to` the
-- call goes on at `resume`.
local from, to, current, resume, stop

while true do
  if a == stop then
    a, stop = resume, nil
  end
  if a > argc then break end
  local op = ARGV[a]
  if op == 'G' or op == 'R' then
    -- The operations that follow, up to the next 'G', 'R' or 'g', use this group.
    flush()
    -- A unit starts: the current group's operations (if it sent any) end here.
    if current and current < a then from, to = current, a end
    current = nil
    u = u + 1
    key, raw = KEYS[u], stored_values[u]
    entries, dirty, changed, need, want = nil, nil, false, 0, 0
    if op == 'R' then
      reply[r + 1] = raw or '-'
      r = r + 1
    end
    a = a + 1
    if ARGV[a] == '=' then
      resume, stop, a = a + 1, to, from
    else
      current = a
    end
  elseif op == 'g' then
    -- GCRA, as governor runs it: emission interval t, tolerance tau.
    flush()
    if current and current < a then from, to = current, a end
    current = nil
    local t, tau = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
    u = u + 1
    local gk = KEYS[u]
    local tat = taken[gk] or tonumber(stored_values[u]) or now
    local earliest = tat - tau
    if now < earliest then
      reply[r + 1], reply[r + 2] = '0', fmt(earliest - now)
    else
      local next_tat = math.max(tat, now) + t
      redis.call('SET', gk, fmt(next_tat), 'PX', ms(next_tat - now) + 10000)
      taken[gk] = next_tat
      reply[r + 1], reply[r + 2] = '1', '0'
    end
    r = r + 2
    a = a + 3
  elseif op == 'c' then
    -- Sliding-window count: the current and previous fixed windows, as
    -- NAME=window,current,previous. A missing counter holds window -1, so
    -- the first add starts a window.
    local name, add = ARGV[a + 1], tonumber(ARGV[a + 3])
    local si, sc, sp
    local stored = get(name)
    if stored then
      si, sc, sp = match(stored, '^([^,]*),([^,]*),([^,]*)$')
    end
    if not si then
      si, sc, sp = '-1', '0', '0'
    end
    if add > 0 then
      local w = window(ARGV[a + 2])
      local index_text = w[3]
      if index_text == si then
        sc = fmt((tonumber(sc) or 0) + add)
      else
        if w[2] == (tonumber(si) or -1) + 1 then sp = sc else sp = '0' end
        sc = ARGV[a + 3]
        si = index_text
      end
      set(name, si .. ',' .. sc .. ',' .. sp)
      keep_counter(ms(2 * w[1]) + 1000)
    end
    reply[r + 1], reply[r + 2], reply[r + 3] = si, sc, sp
    r = r + 3
    a = a + 4
  elseif op == 'C' then
    -- A count only read, after a write to it in this call (otherwise Rust
    -- reads it from the group's text): as stored, '-' when missing.
    local stored = get(ARGV[a + 1])
    local i, c, p = '-', '-', '-'
    if stored then i, c, p = match(stored, '^([^,]*),([^,]*),([^,]*)$') end
    reply[r + 1], reply[r + 2], reply[r + 3] = i or '-', c or '-', p or '-'
    r = r + 3
    a = a + 2
  elseif op == 'Y' then
    -- A decayed sum only read (as 'C'): value and time as stored; Rust decays it.
    local stored = get(ARGV[a + 1])
    local v, t = '-', '-'
    if stored then v, t = match(stored, '^([^,]*),([^,]*)$') end
    reply[r + 1], reply[r + 2] = v or '-', t or '-'
    r = r + 2
    a = a + 2
  elseif op == 'd' or op == 'h' then
    -- Distinct count over the current and previous windows: two
    -- HyperLogLogs used in turn; which window each holds is in the group,
    -- NAME=counted,even,odd,count (the window first, for the check below).
    -- 'h' adds only to a sketch already held: one never held reads 1 (the
    -- item alone) and is not created.
    --
    -- The count is kept in the group too (count, in window counted): while
    -- no add changes a sketch (PFADD answers 0) and the window is the
    -- same, it is what PFCOUNT would answer, without the PFCOUNT (over two
    -- sketches, a merge of both).
    local name, item = ARGV[a + 1], ARGV[a + 3]
    local w = window(ARGV[a + 2])
    local width, index, index_text = w[1], w[2], w[3]
    -- The common case, cheaply: the count was kept in this window (the
    -- entry as read starts with it) and the item, if any, changes nothing
    -- in the current window's sketch. The reply '=' tells Rust to read the
    -- kept count from the group's text.
    local added
    local kept = raw and not (dirty and dirty[name]) and find(raw, ';' .. name .. '=' .. index_text .. ',', 1, true)
    if kept then
      if item == '' then
        reply[r + 1] = '='
      else
        local e, o = match(raw, '^([^,]*),([^,]*)', kept + #name + #index_text + 3)
        if (index % 2 == 0 and e == index_text) or (index % 2 == 1 and o == index_text) then
          local suffix = ':o'
          if index % 2 == 0 then suffix = ':e' end
          added = redis.call('PFADD', key .. ':' .. name .. suffix, item)
          if added == 0 then reply[r + 1] = '=' end
        end
      end
    end
    if reply[r + 1] == nil then
      local even, odd = key .. ':' .. name .. ':e', key .. ':' .. name .. ':o'
      local held_even, held_odd, counted_in, count = -1, -1, -1, nil
      local stored = get(name)
      if stored then
        local sk, se, so, su = match(stored, '^([^,]*),([^,]*),([^,]*),([^,]*)$')
        held_even, held_odd, counted_in, count = tonumber(se) or -1, tonumber(so) or -1, tonumber(sk) or -1, su
      end
      local current, previous, current_held, previous_held
      if index % 2 == 0 then
        current, previous, current_held, previous_held = even, odd, held_even, held_odd
      else
        current, previous, current_held, previous_held = odd, even, held_odd, held_even
      end
      local unheld = op == 'h' and held_even == -1 and held_odd == -1
      if unheld then
        reply[r + 1] = '1'
      else
        local touched = false
        if item == '' then added = 0 end
        if item ~= '' then
          if current_held ~= index then
            -- A new window: start its sketch; it and the group (which says
            -- which window the sketch holds) live until the next window ends.
            local ttl = ms(2 * width) + 1000
            redis.call('DEL', current)
            current_held = index
            if index % 2 == 0 then held_even = index else held_odd = index end
            redis.call('PFADD', current, item)
            redis.call('PEXPIRE', current, ttl)
            keep_counter(ttl)
            added, touched = 1, true
          elseif not added then
            added = redis.call('PFADD', current, item)
          end
        end
        local counted
        if current_held == index and previous_held == index - 1 then
          counted = { current, previous }
        elseif current_held == index then
          counted = { current }
        elseif previous_held == index - 1 then
          counted = { previous }
        end
        if not counted then
          reply[r + 1] = '0'
        elseif added == 0 and counted_in == index and count and count ~= '' then
          reply[r + 1] = count
        else
          -- A held sketch means the group exists with its TTL: the count
          -- can be kept in it.
          count = redis.call('PFCOUNT', unpack(counted))
          counted_in = index
          touched = true
          reply[r + 1] = count
        end
        if touched then
          set(name, fmt(counted_in) .. ',' .. fmt(held_even) .. ',' .. fmt(held_odd) .. ',' .. (count or ''))
        end
      end
    end
    r = r + 1
    a = a + 4
  elseif op == 'y' then
    -- Exponentially decayed sum: NAME=value,when.
    local name, half_life, add = ARGV[a + 1], tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
    local v, at = 0, 0
    local stored = get(name)
    if stored then
      local sv, st = match(stored, '^([^,]*),([^,]*)$')
      v, at = tonumber(sv) or 0, tonumber(st) or 0
    end
    local value = v * math.exp(-math.max(now - at, 0) / half_life * math.log(2))
    if add ~= 0 then value = value + add end
    local text = string.format('%.17g', value)
    if add ~= 0 then
      local when = now_text
      if at > now then when = fmt(at) end
      set(name, text .. ',' .. when)
      keep_counter(ms(20 * half_life) + 1000)
    end
    reply[r + 1] = text
    r = r + 1
    a = a + 4
  elseif op == 'r' then
    -- Rhythm of arrivals: NAME=last,gaps,mean,square (gaps at most SPAN;
    -- running means of the gap and of its square). The same update as
    -- `Rhythm::arrive` in window.rs; Rust turns the reply n, m, q into the
    -- reading.
    local name, window = ARGV[a + 1], tonumber(ARGV[a + 2])
    local last, n, m, q = 0, 0, 0, 0
    local stored = get(name)
    if stored then
      local st, sn, sm, sq = match(stored, '^([^,]*),([^,]*),([^,]*),([^,]*)$')
      last, n, m, q = tonumber(st) or 0, tonumber(sn) or 0, tonumber(sm) or 0, tonumber(sq) or 0
    end
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
    set(name, now_text .. ',' .. fmt(n) .. ',' .. m_text .. ',' .. q_text)
    keep_counter(ms(window) + 1000)
    reply[r + 1], reply[r + 2], reply[r + 3] = n, m_text, q_text
    r = r + 3
    a = a + 3
  elseif op == 'b' then
    -- Ban check (as 'C'): microseconds left, 0 when none. A ban is an
    -- entry of its scope's group, NAME=end,reason.
    local stored = get(ARGV[a + 1])
    local left = (stored and tonumber(match(stored, '^([^,]*)')) or 0) - now
    if left > 0 then reply[r + 1] = fmt(left) else reply[r + 1] = '0' end
    r = r + 1
    a = a + 2
  elseif op == 'B' then
    -- Ban: extend, never shorten. The reason (a detection id) is kept with
    -- the end; the shard's ban index (a sorted set by end time) lists the
    -- ban for the admin API and forgets bans that have run out. The group
    -- lives at least as long as the ban.
    local name, ttl, why, member = ARGV[a + 1], tonumber(ARGV[a + 2]), ARGV[a + 3], ARGV[a + 4]
    local index = KEYS[units + 1]
    local ends = now + ttl
    local stored = get(name)
    local held = stored and tonumber(match(stored, '^([^,]*)')) or 0
    if held < ends then
      set(name, fmt(ends) .. ',' .. why)
      keep(ms(ttl) + 1000, 0)
      redis.call('ZADD', index, fmt(ends), member)
      redis.call('ZREMRANGEBYSCORE', index, '-inf', now_text)
      if redis.call('PEXPIRE', index, ms(ttl) + 1000, 'GT') == 0 then
        redis.call('PEXPIRE', index, ms(ttl) + 1000, 'NX')
      end
    end
    reply[r + 1] = '0'
    r = r + 1
    a = a + 5
  else
    return redis.error_reply('palisade: unknown counter operation ' .. tostring(op))
  end
end
flush()

reply[1] = now_text
return table.concat(reply, ' ', 1, r)
