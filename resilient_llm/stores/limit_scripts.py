"""The Lua scripts of the shared limit (``shared_limit.py``): each runs atomically inside Redis, on Redis's clock."""

_NOW_MS = "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
_RESERVE = (  # KEYS holders (endpoint), permits (model), limit (model), gate (model), active (model)
    # ARGV member prefix, first number, wanted, lease ms, limit if unset, endpoint ceiling, held by the caller, process
    # ``active``: the processes that asked or held lately (2 s); each may hold its fair share of the limit at most.
    _NOW_MS
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)
redis.call('ZADD', KEYS[5], now + 2000, ARGV[8])
redis.call('PEXPIRE', KEYS[5], 4000)
local gate = redis.call('PTTL', KEYS[4])
local limit = tonumber(redis.call('HGET', KEYS[3], 'value') or ARGV[5])
local generation = tonumber(redis.call('HGET', KEYS[3], 'generation') or '0')
local fair = math.max(1, math.ceil(math.floor(limit) / redis.call('ZCARD', KEYS[5])))
local model_count = redis.call('ZCARD', KEYS[2])
local total = redis.call('ZCARD', KEYS[1])
local granted = 0
if gate <= 0 then
  granted = math.min(tonumber(ARGV[3]), math.floor(limit) - model_count, tonumber(ARGV[6]) - total)
  granted = math.max(0, math.min(granted, fair - tonumber(ARGV[7])))
end
local expiry = now + tonumber(ARGV[4])
for i = 0, granted - 1 do
  local member = ARGV[1] .. ':' .. (tonumber(ARGV[2]) + i)
  redis.call('ZADD', KEYS[1], expiry, member)
  redis.call('ZADD', KEYS[2], expiry, member)
end
if granted > 0 then
  redis.call('PEXPIRE', KEYS[1], 2 * tonumber(ARGV[4]))
  redis.call('PEXPIRE', KEYS[2], 2 * tonumber(ARGV[4]))
end
return {granted, model_count + granted, total + granted, tostring(limit), math.max(gate, 0), generation, fair}
"""
)
_RELEASE = """
for i = 1, #ARGV do
  redis.call('ZREM', KEYS[1], ARGV[i])
  redis.call('ZREM', KEYS[2], ARGV[i])
end
return 0
"""  # KEYS holders, permits; ARGV members
_SYNC = (  # KEYS holders, then per model: permits, limit, gate, active; ARGV lease ms, process, then per model:
    # count, members... Renews this process's permits (re-adding any Redis lost: a restart, an expiry while we were
    # cut off), keeps it active where it holds some, and returns per model {limit or '', generation, gate ms, in
    # flight, fair share}.
    _NOW_MS
    + """
local lease = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local out = {}
local a = 3
for m = 0, (#KEYS - 1) / 4 - 1 do
  local permits, limit_key, gate_key, active = KEYS[2 + 4 * m], KEYS[3 + 4 * m], KEYS[4 + 4 * m], KEYS[5 + 4 * m]
  redis.call('ZREMRANGEBYSCORE', permits, '-inf', now)
  local count = tonumber(ARGV[a])
  for i = 1, count do
    redis.call('ZADD', KEYS[1], now + lease, ARGV[a + i])
    redis.call('ZADD', permits, now + lease, ARGV[a + i])
  end
  a = a + count + 1
  redis.call('ZREMRANGEBYSCORE', active, '-inf', now)
  if count > 0 then
    redis.call('PEXPIRE', permits, 2 * lease)
    redis.call('ZADD', active, now + 2000, ARGV[2])
    redis.call('PEXPIRE', active, 4000)
  end
  local value = redis.call('HGET', limit_key, 'value') or ''
  local generation = tonumber(redis.call('HGET', limit_key, 'generation') or '0')
  local limit = tonumber(value ~= '' and value or '0')
  local fair = 0
  if limit > 0 then fair = math.max(1, math.ceil(math.floor(limit) / math.max(1, redis.call('ZCARD', active)))) end
  local gate = math.max(redis.call('PTTL', gate_key), 0)
  table.insert(out, {value, generation, gate, redis.call('ZCARD', permits), fair})
end
redis.call('PEXPIRE', KEYS[1], 2 * lease)
return out
"""
)
_IN_FLIGHT = _NOW_MS + "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now) return redis.call('ZCARD', KEYS[1])"
_SET_GATE = """
local ms = math.min(tonumber(ARGV[1]), tonumber(ARGV[2]))
local left = redis.call('PTTL', KEYS[1])
if left < ms then redis.call('SET', KEYS[1], '1', 'PX', ms) return ms end
return left
"""  # ARGV ms, cap ms: the key never outlives the cap, so no process (nor one started later) waits longer
_ADD = """
local value = tonumber(redis.call('HGET', KEYS[1], 'value') or ARGV[4])
local generation = tonumber(redis.call('HGET', KEYS[1], 'generation') or '0')
if tonumber(ARGV[6]) >= 0 and generation ~= tonumber(ARGV[6]) then return tostring(value) end
value = math.min(tonumber(ARGV[3]), math.max(tonumber(ARGV[2]), value + tonumber(ARGV[1])))
redis.call('HSET', KEYS[1], 'value', tostring(value))
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return tostring(value)
"""  # ARGV delta, floor, ceiling, value if unset, ttl ms, generation seen (-1: add whatever it is)
_CUT = """
local generation = tonumber(redis.call('HGET', KEYS[1], 'generation') or '0')
local value = tonumber(redis.call('HGET', KEYS[1], 'value') or ARGV[4])
if generation ~= tonumber(ARGV[2]) then return {0, tostring(value), generation} end
value = math.max(tonumber(ARGV[3]), math.min(value, tonumber(ARGV[1])))
redis.call('HSET', KEYS[1], 'value', tostring(value), 'generation', generation + 1)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {1, tostring(value), generation + 1}
"""  # ARGV target, generation seen, floor, value if unset, ttl ms

SCRIPTS = {
    "reserve": _RESERVE,
    "release": _RELEASE,
    "sync": _SYNC,
    "in_flight": _IN_FLIGHT,
    "set_gate": _SET_GATE,
    "add": _ADD,
    "cut": _CUT,
}
