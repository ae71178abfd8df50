-- wrk script (`wrk.py`): GET /recs/u2i/rerank for the users listed in USERS_FILE in turn (each thread from
-- its own offset); counts answers by status and refusals that carry Retry-After, and prints one JSON line.
local users, threads, counter = {}, {}, 1

function setup(thread)
  thread:set("offset", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  for line in io.lines(os.getenv("USERS_FILE")) do table.insert(users, line) end
  i = tonumber(offset) or 1
  statuses = {}
  retry_after = 0
end

function request()
  local user = users[(i % #users) + 1]
  i = i + 7
  return wrk.format("GET", "/recs/u2i/rerank?top_k_retrieval=100&count=10&user_id=" .. user)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if status == 503 and (headers["retry-after"] or headers["Retry-After"]) then retry_after = retry_after + 1 end
end

function done(summary, latency, requests)
  local counts, with_retry_after = {}, 0
  for _, thread in ipairs(threads) do
    with_retry_after = with_retry_after + thread:get("retry_after")
    for status, n in pairs(thread:get("statuses")) do counts[tostring(status)] = (counts[tostring(status)] or 0) + n end
  end
  local parts = {}
  for status, n in pairs(counts) do table.insert(parts, string.format('"%s": %d', status, n)) end
  io.write(string.format('WRK_JSON {"requests": %d, "seconds": %.3f, "p50_ms": %.2f, "p90_ms": %.2f, "p99_ms": %.2f, ' ..
    '"max_ms": %.2f, "timeouts": %d, "connect_errors": %d, "read_errors": %d, "refused_with_retry_after": %d, "statuses": {%s}}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, summary.errors.timeout, summary.errors.connect,
    summary.errors.read, with_retry_after, table.concat(parts, ", ")))
end
