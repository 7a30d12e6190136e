-- Apply one partition's batch delta and advance its watermark, atomically.
-- KEYS[1]: the partition's meta hash ("<prefix>:{p}:meta"); every other key shares its {p} slot.
-- ARGV: base, expected watermark, new watermark, applied, duplicates, invalid, history length,
--       max neighbours, dedup window, popularity epoch, popularity rescale, then an op stream.
-- Returns 1 on success, or {0, current watermark} when the watermark moved (a stale writer).
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
    for j = 1, count do redis.call('LPUSH', key, ARGV[i + 2 + j]) end
    redis.call('LTRIM', key, 0, history_len - 1)
    i = i + 3 + count
  elseif op == 'B' then
    local key = base .. 'b:' .. ARGV[i + 1]
    local count = tonumber(ARGV[i + 2])
    for j = 1, count do redis.call('SADD', key, ARGV[i + 2 + j]) end
    i = i + 3 + count
  elseif op == 'S' then
    local key = base .. 'seen:' .. ARGV[i + 1]
    local count = tonumber(ARGV[i + 2])
    for j = 1, count do redis.call('ZADD', key, ARGV[i + 2 + 2 * j], ARGV[i + 1 + 2 * j]) end
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
    redis.call('HSET', base .. 'uv:' .. ARGV[i + 1], 'ver', ARGV[i + 2], 'v', ARGV[i + 3])
    i = i + 4
  elseif op == 'P' then
    local count = tonumber(ARGV[i + 1])
    for j = 1, count do redis.call('ZINCRBY', pop, ARGV[i + 1 + 2 * j], ARGV[i + 2 * j]) end
    i = i + 2 + 2 * count
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
