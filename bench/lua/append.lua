-- wrk script for bench/append: POST one ~300-byte message to a random
-- conversation out of N, over wrk's keep-alive connections.
--
-- Arguments (after `--` on the wrk command line):
--   1  number of conversations       (default 1000)
--   2  message text                  (default: 237 chars of lorem ipsum)
--   3  stop after this many responses (0 = run for -d; per wrk thread; the
--      orchestrator then sends SIGINT when it sees "BENCH limit_reached")
--   4  conversation id prefix        (default "bench-")
--
-- All requests are pre-formatted in init() so request() is one table lookup:
-- the generator should not be the bottleneck. done() prints machine-readable
-- lines (prefix "BENCH ") that bench/append.ts parses: exact latency
-- percentiles in microseconds and per-status response counts.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

local reqs = {}
local nconv = 1000
local limit = 0
-- Per-thread counters (read by done() through thread:get).
responses = 0
c201 = 0
c2xx = 0
cother = 0
others = ""

function init(args)
  nconv = tonumber(args[1]) or 1000
  local text = args[2]
  if text == nil or text == "" then
    text = string.sub(string.rep("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. ", 3), 1, 237)
  end
  limit = tonumber(args[3]) or 0
  local prefix = args[4] or "bench-"
  local body = '{"message":{"role":"user","parts":[{"type":"text","text":"' .. text .. '"}]}}'
  local headers = { ["Content-Type"] = "application/json" }
  for i = 0, nconv - 1 do
    reqs[i] = wrk.format("POST", "/v1/conversations/" .. prefix .. i .. "/messages", headers, body)
  end
  -- Distinct seed per thread.
  math.randomseed(os.time() + math.floor(os.clock() * 1000000))
end

function request()
  return reqs[math.random(0, nconv - 1)]
end

function response(status, headers, body)
  responses = responses + 1
  if status == 201 then
    c201 = c201 + 1
  elseif status >= 200 and status < 300 then
    c2xx = c2xx + 1
  else
    cother = cother + 1
    if cother <= 5 then
      others = others .. status .. ":" .. string.sub(string.gsub(body or "", "%s+", " "), 1, 200) .. "\n"
    end
  end
  if limit > 0 and responses == limit then
    -- wrk's main thread sleeps for the whole -d even when threads stop, so
    -- tell the orchestrator, which interrupts wrk (SIGINT ends wrk's sleep
    -- and it prints its summary as usual).
    io.write("BENCH limit_reached\n")
    io.flush()
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local t201, t2xx, tother, tresp = 0, 0, 0, 0
  local samples = ""
  for _, t in ipairs(threads) do
    t201 = t201 + (t:get("c201") or 0)
    t2xx = t2xx + (t:get("c2xx") or 0)
    tother = tother + (t:get("cother") or 0)
    tresp = tresp + (t:get("responses") or 0)
    samples = samples .. (t:get("others") or "")
  end
  local e = summary.errors
  io.write(string.format("BENCH requests %d\n", summary.requests))
  io.write(string.format("BENCH duration_us %d\n", summary.duration))
  io.write(string.format("BENCH bytes %d\n", summary.bytes))
  io.write(string.format("BENCH responses %d\n", tresp))
  io.write(string.format("BENCH status201 %d\n", t201))
  io.write(string.format("BENCH status2xx_other %d\n", t2xx))
  io.write(string.format("BENCH status_non2xx %d\n", tother))
  io.write(string.format("BENCH errors_connect %d\n", e.connect))
  io.write(string.format("BENCH errors_read %d\n", e.read))
  io.write(string.format("BENCH errors_write %d\n", e.write))
  io.write(string.format("BENCH errors_timeout %d\n", e.timeout))
  io.write(string.format("BENCH lat_mean_us %.1f\n", latency.mean))
  io.write(string.format("BENCH lat_max_us %d\n", latency.max))
  for _, p in ipairs({ 50, 90, 99, 99.9 }) do
    io.write(string.format("BENCH lat_p%s_us %d\n", tostring(p), latency:percentile(p)))
  end
  for line in string.gmatch(samples, "[^\n]+") do
    io.write("BENCH sample_error " .. line .. "\n")
  end
end
