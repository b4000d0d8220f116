-- wrk script for bench/playlists.py: each request pulls a random district's playlist with that
-- district's own key, and the run ends by printing the latency percentiles the bench parses.
-- The keys file (one "code key" per line) and the date come from the environment.
local pulls = {}

function init(args)
  local date = os.getenv("LOA_BENCH_DATE")
  for line in io.lines(os.getenv("LOA_BENCH_KEYS")) do
    local code, key = line:match("^(%S+) (%S+)$")
    pulls[#pulls + 1] = wrk.format("GET", "/api/v1/districts/" .. code .. "/playlist?date=" .. date,
      { ["Authorization"] = "Bearer " .. key })
  end
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)"), 16) % 100000)
end

-- LOA_BENCH_PAUSE_MS: each connection waits this long after each answer before its next pull
-- (0: back to back, the server saturated).
local pause = tonumber(os.getenv("LOA_BENCH_PAUSE_MS") or "0")

function delay()
  return pause
end

function request()
  return pulls[math.random(#pulls)]
end

function done(summary, latency, requests)
  -- Microseconds; one line the bench reads.
  io.write(string.format("LOA p50=%d p90=%d p99=%d max=%d requests=%d errors=%d\n",
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    summary.requests, summary.errors.status + summary.errors.connect + summary.errors.read
      + summary.errors.write + summary.errors.timeout))
end
