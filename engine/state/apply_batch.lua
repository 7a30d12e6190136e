-- Apply one partition's batch delta and advance its watermark, atomically.
-- KEYS[1]: the partition's meta hash ("<prefix>:{p}:meta"); every other key shares its {p} slot.
-- ARGV[1]: a JSON array of strings: base, expected watermark, new watermark, applied, duplicates,
--          invalid, history length, max neighbours, dedup window, popularity epoch, popularity
--          rescale, then an op stream; ARGV[1 + k]: the k-th user vector's bytes (op V).
--          (One argument, not one per value: packing each costs the client far more than decoding.)
-- Returns 1 on success, or {0, current watermark} when the watermark moved (a stale writer).
local blobs = ARGV
local ARGV = cjson.decode(blobs[1])
local meta = KEYS[1]
local base = ARGV[1]
local current = redis.call('HGET', meta, 'watermark')
if current == false then current = '-1' end
if current ~= ARGV[2] then
  return {0, current}
end
local history_len = tonumber(ARGV[7])
local max_nb = tonumber(ARGV[8])
local window = tonumber(ARGV[9])
local rescale = ARGV[11]
local pop = base .. 'pop'
-- `command key list[first..last]` in slices of 1,000 values (unpack's stack limit is ~8,000);
-- returns the last call's reply.
local function call_many(command, key, list, first, last)
  local reply
  for from = first, last, 1000 do
    reply = redis.call(command, key, unpack(list, from, math.min(from + 999, last)))
  end
  return reply
end
if rescale ~= '1' then
  redis.call('ZUNIONSTORE', pop, 1, pop, 'WEIGHTS', rescale)
end
local i = 12
local n = #ARGV
while i <= n do
  local op = ARGV[i]
  if op == 'H' then
    local key = base .. 'h:' .. ARGV[i + 1]
    local count = tonumber(ARGV[i + 2])
    -- one LPUSH of all (pushed in order, as one call each would); trimmed only when too long
    if call_many('LPUSH', key, ARGV, i + 3, i + 2 + count) > history_len then
      redis.call('LTRIM', key, 0, history_len - 1)
    end
    i = i + 3 + count
  elseif op == 'B' then
    local key = base .. 'b:' .. ARGV[i + 1]
    local count = tonumber(ARGV[i + 2])
    call_many('SADD', key, ARGV, i + 3, i + 2 + count)
    i = i + 3 + count
  elseif op == 'S' then
    local key = base .. 'seen:' .. ARGV[i + 1]
    local count = tonumber(ARGV[i + 2])
    local scored = {}  -- (score, member) pairs of one ZADD; a repeated id keeps its last score, as before
    for j = 1, count do
      scored[2 * j - 1] = ARGV[i + 2 + 2 * j]
      scored[2 * j] = ARGV[i + 1 + 2 * j]
    end
    call_many('ZADD', key, scored, 1, 2 * count)
    if redis.call('ZCARD', key) > window then
      redis.call('ZREMRANGEBYRANK', key, 0, -(window + 1))
    end
    i = i + 3 + 2 * count
  elseif op == 'X' then
    redis.call('HSET', base .. 's:' .. ARGV[i + 1], 'id', ARGV[i + 2], 'ts', ARGV[i + 3])
    i = i + 4
  elseif op == 'C' then
    local key = base .. 'co:' .. ARGV[i + 1]
    local count = tonumber(ARGV[i + 2])
    for j = 1, count do redis.call('ZINCRBY', key, ARGV[i + 2 + 2 * j], ARGV[i + 1 + 2 * j]) end
    -- Trim only past twice the bound, so a busy item is not trimmed on every batch.
    if redis.call('ZCARD', key) > 2 * max_nb then
      redis.call('ZREMRANGEBYRANK', key, 0, -(max_nb + 1))
    end
    i = i + 3 + 2 * count
  elseif op == 'V' then
    redis.call('HSET', base .. 'uv:' .. ARGV[i + 1], 'ver', ARGV[i + 2], 'v', blobs[1 + tonumber(ARGV[i + 3])])
    i = i + 4
  elseif op == 'P' then
    local count = tonumber(ARGV[i + 1])
    for j = 1, count do redis.call('ZINCRBY', pop, ARGV[i + 1 + 2 * j], ARGV[i + 2 * j]) end
    i = i + 2 + 2 * count
  elseif op == 'Q' then
    -- Session-model touches (engine.sessionknn.SessionKNN.touch, step for step):
    -- rule steps, rule distance power, symmetric rules, sessions kept per item, items kept per
    -- session, sessions kept, rules kept per item, trend half-life (0: off), count, then
    -- count x (session, item, ts).
    local steps = tonumber(ARGV[i + 1])
    local power = tonumber(ARGV[i + 2])
    local symmetric = ARGV[i + 3] == '1'
    local max_is = tonumber(ARGV[i + 4])
    local max_len = tonumber(ARGV[i + 5])
    local max_sessions = tonumber(ARGV[i + 6])
    local max_rules = tonumber(ARGV[i + 7])
    local trend_hl = tonumber(ARGV[i + 8])
    local count = tonumber(ARGV[i + 9])
    local sessions = base .. 'sess'
    local trend = base .. 'tr'
    local epoch = nil
    if trend_hl > 0 then epoch = tonumber(redis.call('HGET', meta, 'trend_epoch')) end
    -- Calls into Redis cost about a microsecond each beyond the command itself, so what this
    -- call can know it keeps instead of reading it back per event: rule weights by distance;
    -- the sizes of rule rows and item indexes (read once, then kept in step: nothing else
    -- writes them while the script runs); each touched session's items since its first read,
    -- with the list's length (when the list is shorter than `steps`, only that many are its).
    -- `first[d]`: ZINCRBY's reply for a rule it creates with weight `d` (the weight as Redis
    -- writes a score, read off a scratch key): comparing the reply strings finds a new rule without
    -- turning every reply into a number (a double has one written form, so equal strings are equal
    -- scores; an existing rule scores more, weights being positive).
    local weights, first = {}, {}
    local scratch = base .. 'rule-scratch'
    for d = 1, steps do
      weights[d] = string.format('%.17g', d ^ -power)
      first[d] = redis.call('ZINCRBY', scratch, weights[d], d)
    end
    if steps > 0 then redis.call('DEL', scratch) end
    local rule_sizes, item_sizes = {}, {}
    local recent, lengths = {}, {}
    -- A session touched again in this call gets its newest timestamp and its new items written
    -- once, at the end: `live` sessions were added (or found) by this call's first ZADD of them;
    -- `pending_ts` holds the newest timestamps not yet written, `pending_items` the items not yet
    -- pushed. Only an eviction reads them before the end, and it writes them first.
    local live, pending_ts, pending_items = {}, {}, {}
    local function flush_stamps()
      local stamped = {}
      for sid, stamp in pairs(pending_ts) do
        stamped[#stamped + 1] = stamp
        stamped[#stamped + 1] = sid
      end
      if #stamped > 0 then call_many('ZADD', sessions, stamped, 1, #stamped) end
      pending_ts = {}
    end
    local function flush_items(sid)
      local items = pending_items[sid]
      if items ~= nil then
        pending_items[sid] = nil
        local key = base .. 'ss:' .. sid
        -- the list as after one push (and trim) per item
        if call_many('RPUSH', key, items, 1, #items) > max_len then
          redis.call('LTRIM', key, -max_len, -1)
        end
      end
    end
    local function add_rule(source, target, d)
      local key = base .. 'r:' .. source
      -- Only a new rule can take a row past its cap, and a new rule scores exactly its first
      -- weight (weights are positive, so an existing rule scores more).
      if redis.call('ZINCRBY', key, weights[d], target) == first[d] then
        local size = rule_sizes[key]
        if size == nil then size = redis.call('ZCARD', key) else size = size + 1 end
        if size > 2 * max_rules then
          redis.call('ZREMRANGEBYRANK', key, 0, -(max_rules + 1))
          size = max_rules
        end
        rule_sizes[key] = size
      end
    end
    for j = 0, count - 1 do
      local sid = ARGV[i + 10 + 3 * j]
      local item = ARGV[i + 11 + 3 * j]
      local ts_text = ARGV[i + 12 + 3 * j]
      -- the session's last activity, and whether it is new (ZADD counts added members)
      local evicted_itself = false
      if live[sid] then
        pending_ts[sid] = ts_text
      else
        if redis.call('ZADD', sessions, ts_text, sid) == 1 then
          redis.call('HINCRBY', meta, 'sessions', 1)
          if redis.call('ZCARD', sessions) > max_sessions then
            -- forget the oldest session, also in the index of every item it still lists
            flush_stamps()
            local oldest = redis.call('ZPOPMIN', sessions)[1]
            flush_items(oldest)
            local okey = base .. 'ss:' .. oldest
            for _, old_item in ipairs(redis.call('LRANGE', okey, 0, -1)) do
              local ikey = base .. 'is:' .. old_item
              local removed = redis.call('ZREM', ikey, oldest)
              if item_sizes[ikey] ~= nil then item_sizes[ikey] = item_sizes[ikey] - removed end
            end
            redis.call('DEL', okey)
            recent[oldest] = nil
            live[oldest] = nil
            evicted_itself = oldest == sid  -- older than every kept session: added back below
          end
        end
        live[sid] = true
      end
      if steps > 0 then
        local seq = recent[sid]
        if seq == nil then
          seq = redis.call('LRANGE', base .. 'ss:' .. sid, -steps, -1)
          recent[sid] = seq
          lengths[sid] = #seq
        end
        local distance = 1
        for k = #seq, math.max(1, #seq - math.min(steps, lengths[sid]) + 1), -1 do
          add_rule(seq[k], item, distance)
          if symmetric and seq[k] ~= item then add_rule(item, seq[k], distance) end
          distance = distance + 1
        end
      end
      if trend_hl > 0 then
        local ts = tonumber(ts_text)
        if epoch == nil then
          epoch = ts
          redis.call('HSET', meta, 'trend_epoch', ts_text)
        end
        local exponent = (ts - epoch) / trend_hl
        if exponent > 60 then  -- rebase before the scores overflow
          redis.call('ZUNIONSTORE', trend, 1, trend, 'WEIGHTS', string.format('%.17g', 2 ^ -exponent))
          epoch = ts
          redis.call('HSET', meta, 'trend_epoch', ts_text)
          exponent = 0
        end
        redis.call('ZINCRBY', trend, string.format('%.17g', 2 ^ exponent), item)
      end
      -- ZADD counts the members it adds: a new (item, session) pair is 1, a new timestamp 0
      local ikey = base .. 'is:' .. item
      if redis.call('ZADD', ikey, ts_text, sid) == 1 then
        redis.call('HINCRBY', base .. 'ic', item, 1)
        -- the index's size before this add; then down to the cap, also when a row is longer than
        -- it (a cap lowered since it was written), as if trimmed before the add: the `drop`
        -- lowest of the others go
        local size = item_sizes[ikey]
        if size == nil then size = redis.call('ZCARD', ikey) - 1 end
        if size >= max_is then
          local drop = size - max_is + 1
          local popped = redis.call('ZPOPMIN', ikey, drop)
          for k = 1, #popped, 2 do
            if popped[k] == sid then
              -- out of order: the new pair ranks among the lowest. The others that went with it
              -- were the lowest others, and the lowest left now ranks above it: put it back, and
              -- drop that one instead.
              redis.call('ZADD', ikey, ts_text, sid)
              redis.call('ZREMRANGEBYRANK', ikey, 1, 1)
              break
            end
          end
          size = max_is - 1
        end
        item_sizes[ikey] = size + 1
      end
      local items = pending_items[sid]
      if items == nil then
        items = {}
        pending_items[sid] = items
      end
      items[#items + 1] = item
      local seq = recent[sid]
      if seq ~= nil then
        seq[#seq + 1] = item
        -- the list's length as far as the rule loop reads it (capped at `steps` there): what
        -- LRANGE found (at most `steps` items), plus one a push, at most `max_len`
        lengths[sid] = math.min(lengths[sid] + 1, max_len)
      end
      if evicted_itself then redis.call('ZADD', sessions, ts_text, sid) end
    end
    flush_stamps()
    for sid in pairs(pending_items) do flush_items(sid) end
    i = i + 10 + 3 * count
  else
    return redis.error_reply('apply_batch: unknown op ' .. tostring(op))
  end
end
redis.call('HSET', meta, 'watermark', ARGV[3])
if ARGV[10] ~= '' then redis.call('HSET', meta, 'popularity_epoch', ARGV[10]) end
redis.call('HINCRBY', meta, 'applied', ARGV[4])
redis.call('HINCRBY', meta, 'duplicates', ARGV[5])
redis.call('HINCRBY', meta, 'invalid', ARGV[6])
return 1
