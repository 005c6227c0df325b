-- wrk: writes the run's summary as JSON to the file named by WRK_OUT. Defines only done(),
-- so wrk keeps its fast path (no Lua per request).
done = function(summary, latency, requests)
  local e = summary.errors
  local f = assert(io.open(os.getenv("WRK_OUT"), "w"))
  f:write(string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"p50":%d,"p99":%d,"p999":%d,"mean":%.1f,"max":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
    latency.mean, latency.max))
  f:close()
end
