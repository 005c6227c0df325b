-- wrk: each request carries the next app JWT of the file named by JWT_FILE (one per line),
-- wrapping at the end, so every account is requested in turn. The run's summary is written
-- as wrk-summary.lua writes it (WRK_SUMMARY names that script).
local jwts = {}
for line in io.lines(os.getenv("JWT_FILE")) do
  if #line > 0 then jwts[#jwts + 1] = "Bearer " .. line end
end
local next_jwt = 0

request = function()
  next_jwt = next_jwt % #jwts + 1
  return wrk.format("GET", nil, { Authorization = jwts[next_jwt] })
end

dofile(os.getenv("WRK_SUMMARY"))
