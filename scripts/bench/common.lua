-- Shared by every wrk script of `make bench` (scripts/bench.py).
--
-- Counts responses by HTTP status in each thread and, when the run is over,
-- writes one JSON document to $BENCH_OUT with the request count, the
-- latency percentiles (microseconds), the socket errors and the status
-- breakdown, so the orchestrator never parses wrk's text output.
--
-- wrk runs this file in the main Lua state and in every thread's state.

local M = {}

threads = {}          -- main state: the thread objects, for done()
bench_statuses = {}   -- thread state: status -> count
bench_id = 0          -- thread state: 1..N, set by setup()

function M.count(status)
  bench_statuses[status] = (bench_statuses[status] or 0) + 1
end

-- The default response hook: count the status.
function response(status, headers, body)
  M.count(status)
end

-- Scripts that need per-thread set-up call this from their own setup().
function M.register_thread(thread)
  table.insert(threads, thread)
  thread:set("bench_id", #threads)
end

function setup(thread)
  M.register_thread(thread)
end

local function json_number(n)
  if n ~= n or n == math.huge or n == -math.huge then return "null" end
  return string.format("%.3f", n)
end

function done(summary, latency, requests)
  local statuses = {}
  for _, t in ipairs(threads) do
    local s = t:get("bench_statuses") or {}
    for code, n in pairs(s) do
      statuses[code] = (statuses[code] or 0) + n
    end
  end
  local parts = {}
  for code, n in pairs(statuses) do
    table.insert(parts, string.format('"%d": %d', code, n))
  end
  local e = summary.errors
  local out = {
    '{',
    string.format('"duration_us": %d,', summary.duration),
    string.format('"requests": %d,', summary.requests),
    string.format('"bytes": %d,', summary.bytes),
    string.format('"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d},',
      e.connect, e.read, e.write, e.status, e.timeout),
    string.format('"latency_us": {"min": %s, "mean": %s, "p50": %s, "p90": %s, "p99": %s, "max": %s},',
      json_number(latency.min), json_number(latency.mean),
      json_number(latency:percentile(50)), json_number(latency:percentile(90)),
      json_number(latency:percentile(99)), json_number(latency.max)),
    string.format('"statuses": {%s}', table.concat(parts, ", ")),
    '}',
  }
  local path = os.getenv("BENCH_OUT")
  if path and path ~= "" then
    local f = assert(io.open(path, "w"))
    f:write(table.concat(out, "\n"), "\n")
    f:close()
  else
    io.write(table.concat(out, "\n"), "\n")
  end
end

return M
