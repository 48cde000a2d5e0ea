-- POST /add with a different client (1..1000) and amount (1..1000000) on every request, as pgbench/add.sql does.
local counter = 0
function init(args)
  -- Each wrk thread has its own Lua state: seed each differently so threads do not send the same sequence.
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 100000)
end
function request()
  counter = counter + 1
  local path = string.format("/add?client_id=%d&amount=%d", math.random(1, 1000), math.random(1, 1000000))
  return wrk.format("POST", path, nil, "")
end
