-- Fairness: a new connection per request, and a tally of which process
-- answered (the /pid route's body is its PID). done() prints "PID <pid> <n>".
wrk.headers["Connection"] = "close"

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  counts = {}
end

function response(status, headers, body)
  counts[body] = (counts[body] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    for pid, n in pairs(thread:get("counts")) do
      total[pid] = (total[pid] or 0) + n
    end
  end
  for pid, n in pairs(total) do
    io.write(string.format("PID %s %d\n", pid, n))
  end
end
