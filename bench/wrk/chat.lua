-- wrk script: POST /v1/chat turns, one live session per connection.
--
--   wrk -t T -c C -d D -s chat.lua URL -- TAG SESSIONS_PER_THREAD [QUOTA_PER_THREAD]
--
-- Each thread cycles through its own SESSIONS_PER_THREAD session ids (C / T for a load test,
-- so there are as many sessions as connections and each history grows turn after turn).
-- With QUOTA_PER_THREAD, each thread stops after that many responses (fill mode).
-- `done` prints one machine-readable line, BENCH_JSON {...}, for bench/http_bench.py.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

local message = "Could you remind me what we decided about the retention policy for the chat "
  .. "logs, and whether it applies to EU users?"
local counter = 0
local answered = 0

function init(args)
  tag = args[1] or "bench"
  sessions = tonumber(args[2] or "1")
  quota = tonumber(args[3] or "0")
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  if quota > 0 then
    response = function(status, headers, body)
      answered = answered + 1
      if answered >= quota then
        wrk.thread:stop()
      end
    end
  end
end

function request()
  local session = counter % sessions
  counter = counter + 1
  local body = string.format('{"session_id":"%s-t%d-s%d","message":"%s"}', tag, tid, session,
    message)
  return wrk.format("POST", "/v1/chat", nil, body)
end

function done(summary, latency, requests)
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"non2xx":%d,"socket_errors":%d,'
      .. '"p50_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d}\n',
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean, latency.max))
end
