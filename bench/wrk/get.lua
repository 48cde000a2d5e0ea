-- GET /get/<id> for a random id in [id_min, id_max] (passed after `--`), all of which exist, as pgbench/get.sql.
local id_min, id_max = 1, 1
function init(args)
  id_min = tonumber(args[1]) or 1
  id_max = tonumber(args[2]) or id_min
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 100000)
end
function request()
  return wrk.format("GET", "/get/" .. math.random(id_min, id_max))
end
