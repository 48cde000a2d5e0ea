-- GET /getall?after_id=<x>&limit=1000: one keyset page, as a feed consumer reads them, from a random after_id in
-- [lo, hi] (passed after `--`), as pgbench/page.sql. Built as get.lua builds its requests (split once in init).
local lo, hi = 0, 0
local head, tail = "", ""
function init(args)
  lo = tonumber(args[1]) or 0
  hi = tonumber(args[2]) or lo
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 100000)
  head, tail = wrk.format("GET", "/getall?limit=1000&after_id=\0"):match("^(.-)%z(.*)$")
end
function request()
  return head .. math.random(lo, hi) .. tail
end
