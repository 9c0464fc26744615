-- Appended to every run's script by wrk.py: wrk's text report stops at p99, so
-- done() also prints p50, p99 and p99.9 from the same histogram, in µs, as
-- "PERCENTILE <p> <us>". A done() the scenario's own script defined runs first.
local scenario_done = done

function done(summary, latency, requests)
  if scenario_done then
    scenario_done(summary, latency, requests)
  end
  for _, p in ipairs({50, 99, 99.9}) do
    io.write(string.format("PERCENTILE %g %d\n", p, latency:percentile(p)))
  end
end
