-- GET wrk.path (health, me). Optional:
--   BENCH_BEARER    access token, sent as "Authorization: Bearer ..."
--   BENCH_DELAY_MS  pause before each request (latency probes that must
--                   not add load of their own)
local common = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

local bearer = os.getenv("BENCH_BEARER")
if bearer and bearer ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. bearer
end

local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "")
if delay_ms and delay_ms > 0 then
  function delay()
    return delay_ms
  end
end
