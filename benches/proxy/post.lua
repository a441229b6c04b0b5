-- wrk script for the proxy benchmark: POST /predict with the fraud example's named features
-- (about 250 bytes each, eight different bodies in turn), plus one machine-readable summary
-- line (WRKSTATS ...) that run.sh parses. The transaction_id/timestamp fields are not in the
-- profile: the monitor counts them as unknown features, as it would in production.
local bodies = {
  [[{"transaction_id": "52e6b438-f2a7-4269-e513-0c5ca6a3a450", "timestamp": "2026-11-27T08:04:52.548Z", "amount": 8.42, "age": 82, "account_age_days": 880, "transactions_24h": 0, "distance_km": 1.078, "merchant_category": "other", "channel": "pos"}]],
  [[{"transaction_id": "3d9c1724-1738-48d1-ecad-d3ac0f21ddb6", "timestamp": "2026-11-27T08:36:07.970Z", "amount": 12.5, "age": 25, "account_age_days": 2364, "transactions_24h": 6, "distance_km": 0.61, "merchant_category": "restaurant", "channel": "pos"}]],
  [[{"transaction_id": "8e81973e-dbc4-4221-ca23-24ed6b4cb242", "timestamp": "2026-11-27T08:34:07.584Z", "amount": 7.49, "age": 41, "account_age_days": 423, "transactions_24h": 3, "distance_km": 5.59, "merchant_category": "electronics", "channel": "atm"}]],
  [[{"transaction_id": "1012f037-907a-40f4-9e77-7f1534b9b5df", "timestamp": "2026-11-27T08:43:34.437Z", "amount": 108.85, "age": 76, "account_age_days": 1482, "transactions_24h": 4, "distance_km": 3.427, "merchant_category": "restaurant", "channel": "atm"}]],
  [[{"transaction_id": "c7a2ea20-3e7d-414f-930d-86734cdd2055", "timestamp": "2026-11-27T08:31:56.351Z", "amount": 77.69, "age": 27, "account_age_days": 484, "transactions_24h": 8, "distance_km": 6.498, "merchant_category": "gaming", "channel": "online"}]],
  [[{"transaction_id": "26e87555-eeea-47d2-ebf4-f6460a097c97", "timestamp": "2026-11-27T08:42:04.782Z", "amount": 71.69, "age": 58, "account_age_days": 1394, "transactions_24h": 5, "distance_km": 10.828, "merchant_category": "electronics", "channel": "online"}]],
  [[{"transaction_id": "119a72d1-d708-417f-f1d6-795e451abd81", "timestamp": "2026-11-27T08:44:42.066Z", "amount": 96.73, "age": 67, "account_age_days": 2739, "transactions_24h": 5, "distance_km": 0.274, "merchant_category": "other", "channel": "online"}]],
  [[{"transaction_id": "2b0537e6-9c65-41df-fe62-37dc0f17a300", "timestamp": "2026-11-27T08:49:18.132Z", "amount": 88.16, "age": 81, "account_age_days": 331, "transactions_24h": 2, "distance_km": 7.156, "merchant_category": "electronics", "channel": "online"}]],
}

local requests = {}
local n = 0

-- WRK_DELAY_MS=<ms>: each connection waits that long before its next request, so the offered
-- load is fixed (about connections / (delay + latency)) and the same for every target: the
-- latency comparison at equal load, below saturation.
local pace = tonumber(os.getenv("WRK_DELAY_MS") or "")
if pace and pace > 0 then
  function delay()
    return pace
  end
end

function init(args)
  for i, body in ipairs(bodies) do
    requests[i] = wrk.format("POST", "/predict", { ["Content-Type"] = "application/json" }, body)
  end
end

function request()
  n = n + 1
  return requests[(n % #requests) + 1]
end

function done(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    "WRKSTATS requests=%d duration_us=%d connect=%d read=%d write=%d status=%d timeout=%d "
      .. "p50_us=%d p90_us=%d p99_us=%d p999_us=%d mean_us=%.1f max_us=%d\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.mean, latency.max))
end
