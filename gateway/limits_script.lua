-- Pre-call checks of one gateway request, atomically: token buckets (consumer+service, and the
-- key's own when it has one) and the subscription's monthly quota reservation.
-- KEYS[1] bucket consumer+service, KEYS[2] bucket of the key ("" = none), KEYS[3] quota hash ("" = none)
-- ARGV[1] now in ms (0: the server's clock), ARGV[2] rpm of KEYS[1] (0 = none), ARGV[3] rpm of KEYS[2],
-- ARGV[4] requests per month (-1 = none), ARGV[5] tokens per month (-1 = none),
-- ARGV[6] tokens to reserve, ARGV[7] quota key lifetime (s)
-- Returns {verdict, limit, remaining, reset_ms, requests_used, tokens_used}; verdict 1 = allowed,
-- 0 = rate limited (reset_ms: wait until one token), -1 = request quota, -2 = token quota.
local now = tonumber(ARGV[1])
if now == 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function bucket(key, rpm)
  -- tokens after refill, and ms until the next token
  local state = redis.call('HMGET', key, 't', 'ts')
  local tokens = tonumber(state[1]) or rpm
  local last = tonumber(state[2]) or now
  if now > last then tokens = math.min(rpm, tokens + (now - last) * rpm / 60000) end
  return tokens, math.ceil((1 - tokens) * 60000 / rpm)
end

local checks = {}
for i = 1, 2 do
  local rpm = tonumber(ARGV[i + 1])
  if KEYS[i] ~= '' and rpm > 0 then
    local tokens, wait = bucket(KEYS[i], rpm)
    if tokens < 1 then return {0, rpm, 0, wait, 0, 0} end
    checks[#checks + 1] = {KEYS[i], rpm, tokens}
  end
end

local req_limit, tok_limit, reserve = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local used_req, used_tok = 0, 0
if KEYS[3] ~= '' then
  local q = redis.call('HMGET', KEYS[3], 'r', 't')
  used_req, used_tok = tonumber(q[1]) or 0, tonumber(q[2]) or 0
  if req_limit >= 0 and used_req + 1 > req_limit then return {-1, req_limit, 0, 0, used_req, used_tok} end
  if tok_limit >= 0 and used_tok + reserve > tok_limit then return {-2, tok_limit, 0, 0, used_req, used_tok} end
  used_req = redis.call('HINCRBY', KEYS[3], 'r', 1)
  used_tok = redis.call('HINCRBY', KEYS[3], 't', reserve)
  redis.call('EXPIRE', KEYS[3], tonumber(ARGV[7]))
end

-- report the tightest bucket in the headers
local limit, remaining, reset = -1, -1, 0
for _, c in ipairs(checks) do
  local left = c[3] - 1
  redis.call('HSET', c[1], 't', tostring(left), 'ts', now)
  redis.call('PEXPIRE', c[1], 120000)
  if remaining < 0 or left < remaining then
    limit, remaining, reset = c[2], math.floor(left), math.ceil((c[2] - left) * 60000 / c[2])
  end
end
return {1, limit, remaining, reset, used_req, used_tok}
