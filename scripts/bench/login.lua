-- POST /api/auth/login with fixed credentials ($BENCH_EMAIL, $BENCH_PASSWORD).
-- The same script drives successful logins and the wrong-password flood
-- (login_fail): only the password differs. The request is static, so wrk
-- does not call Lua to build it.
local common = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = string.format('{"email":"%s","password":"%s"}',
  os.getenv("BENCH_EMAIL"), os.getenv("BENCH_PASSWORD"))
