-- GET of a path with one random whole number in it, in [lo, hi]: the arguments after `--` are lo, hi and the path,
-- with {n} where the number goes. The `get` case sends /get/{n} over ids that all exist (as pgbench/get.sql), the
-- `page` case /getall?limit=1000&after_id={n} (as pgbench/page.sql).
-- The request is wrk.format's once, in init, split around the number: request() then only joins three strings. wrk
-- shares the machine with billing and PostgreSQL, and building every request with wrk.format cost it about 3 µs of
-- CPU per request more than pgbench's client spends (docs/benchmarks.md).
local lo, hi = 1, 1
local head, tail = "", ""
function init(args)
  lo = tonumber(args[1]) or 1
  hi = tonumber(args[2]) or lo
  local path = (args[3] or "/get/{n}"):gsub("{n}", "\0", 1)
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 100000)
  head, tail = wrk.format("GET", path):match("^(.-)%z(.*)$")
end
function request()
  return head .. math.random(lo, hi) .. tail
end
