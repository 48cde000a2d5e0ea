-- GET /get/<id> for a random id in [id_min, id_max] (passed after `--`), all of which exist, as pgbench/get.sql.
-- The request is wrk.format's once, in init, split around the id: request() then only joins three strings. wrk
-- shares the machine with billing and PostgreSQL, and building every request with wrk.format cost it about 3 µs of
-- CPU per request more than pgbench's client spends (docs/benchmarks.md).
local id_min, id_max = 1, 1
local head, tail = "", ""
function init(args)
  id_min = tonumber(args[1]) or 1
  id_max = tonumber(args[2]) or id_min
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 100000)
  head, tail = wrk.format("GET", "/get/\0"):match("^(.-)%z(.*)$")
end
function request()
  return head .. math.random(id_min, id_max) .. tail
end
