-- POST /api/auth/refresh, following each connection's rotation chain.
--
-- Every refresh retires the presented token and answers a new one in
-- Set-Cookie, so each chain is strictly sequential. bench.py runs wrk with
-- as many threads as connections: one thread = one Lua state = one
-- connection = one chain. $BENCH_TOKENS names a file with one refresh token
-- (from a fresh login) per line; thread i starts from line i.
local common = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

local cookie_name = os.getenv("BENCH_COOKIE") or "refresh_token"
local tokens = {}
do
  local f = assert(io.open(os.getenv("BENCH_TOKENS"), "r"))
  for line in f:lines() do
    if line ~= "" then table.insert(tokens, line) end
  end
  f:close()
end

token = nil     -- thread state: the live token of this chain
broken = 0      -- thread state: responses without a new cookie

function setup(thread)
  common.register_thread(thread)
  local t = tokens[#threads]
  assert(t, "fewer tokens than wrk threads")
  thread:set("token", t)
end

wrk.method = "POST"

function request()
  return wrk.format(nil, nil, { ["Cookie"] = cookie_name .. "=" .. token }, nil)
end

local pattern = cookie_name:gsub("%-", "%%-") .. "=([^;]*)"

function response(status, headers, body)
  common.count(status)
  local set = headers["set-cookie"] or headers["Set-Cookie"]
  local value = set and set:match(pattern)
  if status == 200 and value and value ~= "" then
    token = value
  else
    broken = broken + 1
  end
end
