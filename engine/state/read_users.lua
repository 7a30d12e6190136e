-- Read many users of one partition in one call: the replies a pipeline of per-user commands
-- would give, in the same order, as one flat array. A Redis call made from a script costs the
-- server about as much again as a pipelined command, but saves the client parsing one reply
-- per command, which is the larger cost (engine.state.redis_store reads users this way).
-- KEYS[1]: the partition's meta hash (routes the call: every key read shares its {p} slot).
-- ARGV[1]: a JSON array of strings (one argument: the client packs it far faster than one
--          argument per value): base, mode, then
--   'load'     dedup window size, '1' to read histories ('0': each an empty array), then per
--              user: user, n, then n event ids  -> meta (watermark,
--              popularity epoch), then per user: history, session (id, ts), vector (v, ver), and
--              when n > 0 the ids' seen scores, then the whole seen window as 'W', id, score, ...
--              where the batch could push a checked id out of it (engine.logic.window_needed),
--              else an empty array
--   'profiles' reads, users                          -> per user: history, purchased, vector, session
--   'recs'     reads, users                          -> as 'profiles', then each user's recs digest
--              (reads: one character per user, '1' to read the history, '0' to return an empty
--              array instead: the worker's scoring holds that user's, see engine.history_cache)
local ARGV = cjson.decode(ARGV[1])
local base = ARGV[1]
local mode = ARGV[2]
local call = redis.call
local out = {}
local n = 0
if mode == 'load' then
  n = 1
  out[1] = call('HMGET', KEYS[1], 'watermark', 'popularity_epoch')
  local window = tonumber(ARGV[3])
  local histories = ARGV[4] == '1'
  local i = 5
  while i <= #ARGV do
    local user = ARGV[i]
    local count = tonumber(ARGV[i + 1])
    if histories then out[n + 1] = call('LRANGE', base .. 'h:' .. user, 0, -1) else out[n + 1] = {} end
    out[n + 2] = call('HMGET', base .. 's:' .. user, 'id', 'ts')
    out[n + 3] = call('HMGET', base .. 'uv:' .. user, 'v', 'ver')
    n = n + 3
    if count > 0 then
      -- in slices of 1,000 ids (unpack's stack limit is ~8,000), joined into one reply
      local key, scores = base .. 'seen:' .. user, {}
      for from = i + 2, i + 1 + count, 1000 do
        local part = call('ZMSCORE', key, unpack(ARGV, from, math.min(from + 999, i + 1 + count)))
        for k = 1, #part do scores[#scores + 1] = part[k] end
      end
      n = n + 1
      out[n] = scores
      -- found: an id already seen; repeated: an id twice in this batch
      local found, repeated, ids = false, false, {}
      for k = 1, count do
        if scores[k] then found = true end
        local id = ARGV[i + 1 + k]
        if ids[id] then repeated = true end
        ids[id] = true
      end
      local whole = {}
      if found or repeated then
        local stored = call('ZCARD', key)
        if stored + count > window then
          whole = call('ZRANGE', key, 0, -1, 'WITHSCORES')
          table.insert(whole, 1, 'W')
        end
      end
      n = n + 1
      out[n] = whole
    end
    i = i + 2 + count
  end
elseif mode == 'profiles' or mode == 'recs' then
  local reads = ARGV[3]
  for j = 4, #ARGV do
    local user = ARGV[j]
    if string.byte(reads, j - 3) == 49 then  -- '1'
      out[n + 1] = call('LRANGE', base .. 'h:' .. user, 0, -1)
    else
      out[n + 1] = {}
    end
    out[n + 2] = call('SMEMBERS', base .. 'b:' .. user)
    out[n + 3] = call('HMGET', base .. 'uv:' .. user, 'v', 'ver')
    out[n + 4] = call('HMGET', base .. 's:' .. user, 'id', 'ts')
    n = n + 4
  end
  if mode == 'recs' then
    for j = 4, #ARGV do
      n = n + 1
      out[n] = call('GET', base .. 'rd:' .. ARGV[j])
    end
  end
else
  return redis.error_reply('read_users: unknown mode ' .. tostring(mode))
end
return out
