-- Coroutines: generators, pipelines, many live coroutines, errors, close.
local function gen(n)
  return coroutine.wrap(function()
    for i = 1, n do coroutine.yield(i) end
  end)
end
local s = 0
for v in gen(20000) do s = s + v end
print("generator", s)

-- producer -> filter -> consumer pipeline
local function producer()
  return coroutine.create(function()
    for i = 1, 5000 do coroutine.yield(i) end
    return nil
  end)
end
local function filter(src, pred)
  return coroutine.create(function()
    while true do
      local _, v = coroutine.resume(src)
      if v == nil then return nil end
      if pred(v) then coroutine.yield(v) end
    end
  end)
end
local chain = filter(filter(producer(), function(v) return v % 3 == 0 end), function(v) return v % 5 ~= 0 end)
local count, total = 0, 0
while true do
  local ok, v = coroutine.resume(chain)
  if not ok or v == nil then break end
  count = count + 1; total = total + v
end
print("pipeline", count, total, coroutine.status(chain))

-- passing values both ways
local co = coroutine.create(function(a, b)
  local c = coroutine.yield(a + b)
  local d, e = coroutine.yield(c * 2)
  return d + e, "done"
end)
print("values", coroutine.resume(co, 1, 2))
print("values", coroutine.resume(co, 10))
print("values", coroutine.resume(co, 3, 4))
print("values", coroutine.resume(co), coroutine.status(co))

-- many live coroutines, round-robin scheduler
local tasks = {}
for id = 1, 500 do
  tasks[id] = coroutine.create(function()
    local acc = 0
    for step = 1, 20 do acc = acc + id * step; coroutine.yield() end
    return acc
  end)
end
local results, alive = 0, #tasks
while alive > 0 do
  alive = 0
  for id = 1, #tasks do
    local t = tasks[id]
    if coroutine.status(t) ~= "dead" then
      local ok, r = coroutine.resume(t)
      if coroutine.status(t) == "dead" then results = results + r else alive = alive + 1 end
    end
  end
end
print("scheduler", results)

-- errors inside coroutines, yield across pcall, isyieldable, running
local bad = coroutine.create(function() coroutine.yield(1); error("inside") end)
print("error", coroutine.resume(bad))
local ok, err = coroutine.resume(bad)
print("error", ok, (err:gsub("^[^:]*:%d+: ", "")), coroutine.status(bad))
print("dead", coroutine.resume(bad))
local across = coroutine.wrap(function()
  local r = { pcall(function() local x = coroutine.yield("from pcall"); error("after " .. x) end) }
  coroutine.yield(r[1], (r[2]:gsub("^[^:]*:%d+: ", "")))
  return "end"
end)
print("across", across())
print("across", across("resume"))
print("across", across())
print("yieldable", coroutine.isyieldable(), coroutine.wrap(function() return coroutine.isyieldable() end)())
local main, ismain = coroutine.running()
print("running", type(main), ismain)

-- close: a suspended coroutine with a pending to-be-closed variable
local log = {}
local withclose = coroutine.create(function()
  local r <close> = setmetatable({}, { __close = function() log[#log + 1] = "closed" end })
  coroutine.yield()
  log[#log + 1] = "never"
end)
coroutine.resume(withclose)
print("close", coroutine.close(withclose), coroutine.status(withclose), table.concat(log, ","))

-- a recursive generator: permutations of 7 elements
local function permgen(a, n)
  if n <= 1 then coroutine.yield(a) else
    for i = 1, n do
      a[n], a[i] = a[i], a[n]
      permgen(a, n - 1)
      a[n], a[i] = a[i], a[n]
    end
  end
end
local perms, checksum = 0, 0
for p in coroutine.wrap(function() permgen({ 1, 2, 3, 4, 5, 6, 7 }, 7) end) do
  perms = perms + 1
  checksum = (checksum * 7 + p[1] * 3 + p[7]) % 1000003
end
print("permutations", perms, checksum)
