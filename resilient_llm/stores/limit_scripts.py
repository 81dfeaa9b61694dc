"""The Lua scripts of the shared limit (``shared_limit.py``): each runs atomically inside Redis, on Redis's clock."""

_NOW_MS = "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
_ACQUIRE = (  # KEYS holders, limit, gate; ARGV member, lease ms, limit if unset
    _NOW_MS
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local gate = redis.call('PTTL', KEYS[3])
local limit = tonumber(redis.call('HGET', KEYS[2], 'value') or ARGV[3])
local generation = tonumber(redis.call('HGET', KEYS[2], 'generation') or '0')
local count = redis.call('ZCARD', KEYS[1])
local granted = 0
if gate <= 0 and count < math.floor(limit) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
  redis.call('PEXPIRE', KEYS[1], 2 * tonumber(ARGV[2]))
  count = count + 1
  granted = 1
end
return {granted, count, tostring(limit), math.max(gate, 0), generation}
"""
)
_RENEW = (  # KEYS holders; ARGV lease ms, members...: the members that had expired already
    _NOW_MS
    + """
local lost = {}
for i = 2, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[i])
  else
    table.insert(lost, ARGV[i])
  end
end
redis.call('PEXPIRE', KEYS[1], 2 * tonumber(ARGV[1]))
return lost
"""
)
_IN_FLIGHT = _NOW_MS + "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now) return redis.call('ZCARD', KEYS[1])"
_SET_GATE = """
local left = redis.call('PTTL', KEYS[1])
if left < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], '1', 'PX', ARGV[1]) return tonumber(ARGV[1]) end
return left
"""
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
    "acquire": _ACQUIRE,
    "renew": _RENEW,
    "in_flight": _IN_FLIGHT,
    "set_gate": _SET_GATE,
    "add": _ADD,
    "cut": _CUT,
}
