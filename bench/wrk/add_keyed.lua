-- POST /add as add.lua (a random client 1..1000 and amount 1..1000000 per request), each request with its own fresh
-- Idempotency-Key: "<run nonce>-<thread>-<counter>", 36 characters like a UUID. The nonce (16 hex digits) is the
-- first argument after `--`; bench.py passes a new one to every wrk invocation, so the warm-up, the measurement and
-- every run use keys never seen before and no request is a replay. The thread number comes from setup(), which wrk
-- calls once per thread in its main Lua state. The keys rise per thread, as time-ordered keys (UUIDv7) would.
-- As in add.lua, the request is wrk.format's once, split where the numbers and the key go.
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("thread_number", threads)
end

local parts = {}
local prefix = ""
local counter = 0
function init(args)
  local nonce = args[1]
  if nonce == nil or not nonce:match("^%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x$") then
    error("add_keyed.lua needs a run nonce of 16 hex digits after --")
  end
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 100000)
  prefix = string.format("%s-%03d-", nonce, thread_number % 1000)
  local a, b, c, d = wrk.format("POST", "/add?client_id=\0&amount=\0", { ["Idempotency-Key"] = "\0" }, "")
    :match("^(.-)%z(.-)%z(.-)%z(.*)$")
  parts = { a, b, c, d }
end
function request()
  counter = counter + 1
  return parts[1] .. math.random(1, 1000) .. parts[2] .. math.random(1, 1000000) .. parts[3]
    .. prefix .. string.format("%015d", counter) .. parts[4]
end
