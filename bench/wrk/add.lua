-- POST /add with a different client (1..1000) and amount (1..1000000) on every request, as pgbench/add.sql does.
-- As in random_path.lua, the request is wrk.format's once, split where the two numbers go.
local parts = {}
function init(args)
  -- Each wrk thread has its own Lua state: seed each differently so threads do not send the same sequence.
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 100000)
  local a, b, c = wrk.format("POST", "/add?client_id=\0&amount=\0", nil, ""):match("^(.-)%z(.-)%z(.*)$")
  parts = { a, b, c }
end
function request()
  return parts[1] .. math.random(1, 1000) .. parts[2] .. math.random(1, 1000000) .. parts[3]
end
