-- POST /api/auth/register with a unique email per request:
-- <prefix>-t<thread>-<n>@bench.example, $BENCH_PREFIX set per run so the
-- warm-up and the measured run never collide.
local common = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

local prefix = os.getenv("BENCH_PREFIX") or "bench"
local password = os.getenv("BENCH_PASSWORD") or "Str0ng!Pass123"
local counter = 0

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

function request()
  counter = counter + 1
  local body = string.format(
    '{"name":"Bench User","email":"%s-t%d-%d@bench.example","password":"%s"}',
    prefix, bench_id, counter, password)
  return wrk.format(nil, nil, nil, body)
end
