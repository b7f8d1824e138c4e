-- POST /token, grant_type=client_credentials, with the client's HTTP Basic header taken from the
-- environment (BENCH_CLIENT_AUTH); counts the 429s apart; one result line.
wrk.method = "POST"
wrk.body = "grant_type=client_credentials"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = os.getenv("BENCH_CLIENT_AUTH")

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  too_many = 0
end

function response(status, headers, body)
  if status == 429 then too_many = too_many + 1 end
end

-- Share of completed responses within 2 s (wrk's default --timeout), by bisection on the percentiles.
local function within(latency, limit_us)
  if latency.max <= limit_us then return 100.0 end
  if latency:percentile(0.001) > limit_us then return 0.0 end
  local lo, hi = 0.001, 100.0
  for _ = 1, 40 do
    local mid = (lo + hi) / 2
    if latency:percentile(mid) <= limit_us then lo = mid else hi = mid end
  end
  return lo
end

done = function(summary, latency, requests)
  local e = summary.errors
  local status_429 = 0
  for _, thread in ipairs(threads) do status_429 = status_429 + (thread:get("too_many") or 0) end
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"timeout":%d,"status":%d,"status_429":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"mean_us":%.1f,"within_2s_pct":%.2f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.timeout,
    e.status, status_429, latency:percentile(50.0), latency:percentile(90.0),
    latency:percentile(99.0), latency.max, latency.mean, within(latency, 2000000)))
end
