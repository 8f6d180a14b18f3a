-- Closures, upvalues, varargs, recursion, tail calls, errors.
local function counter(start, step)
  local n = start
  return function() n = n + step; return n end, function() return n end
end
local inc, get = counter(10, 3)
for _ = 1, 5 do inc() end
print("counter", get(), inc(), get())

-- shared upvalues across closures created in a loop
local fns = {}
for i = 1, 10 do
  local shared = i * 100
  fns[i] = { function() shared = shared + i; return shared end, function() return shared end }
end
local acc = 0
for round = 1, 3 do for i = 1, 10 do acc = acc + fns[i][1]() end end
print("loop closures", acc, fns[10][2](), fns[1][2]())

-- higher-order functions
local function map(f, t) local r = {}; for i = 1, #t do r[i] = f(t[i]) end; return r end
local function filter(p, t) local r = {}; for i = 1, #t do if p(t[i]) then r[#r + 1] = t[i] end end; return r end
local function reduce(f, t, z) for i = 1, #t do z = f(z, t[i]) end; return z end
local function compose(...)
  local fs = { ... }
  return function(x) for i = #fs, 1, -1 do x = fs[i](x) end; return x end
end
local xs = {}
for i = 1, 1000 do xs[i] = i end
local f = compose(function(x) return x + 1 end, function(x) return x * 2 end)
print("hof", reduce(function(a, b) return a + b end, map(f, filter(function(x) return x % 3 == 0 end, xs)), 0))

-- varargs and select
local function va(...)
  local n = select("#", ...)
  local last = n > 0 and select(n, ...) or "none"
  return n, last, #{ ... } <= n
end
print("varargs", va())
print("varargs", va(1, nil, 3, nil))
print("select", select(-2, "a", "b", "c"), select(2, "a", "b", "c"))
local function sum(...)
  local s = 0
  for i = 1, select("#", ...) do s = s + (select(i, ...) or 0) end
  return s
end
print("sum", sum(1, 2, 3, nil, 5), sum(table.unpack(xs, 1, 200)))

-- recursion: memoized fibonacci, ackermann, mutual recursion
local memo = {}
local function fib(n) if n < 2 then return n end; if memo[n] then return memo[n] end; local v = fib(n - 1) + fib(n - 2); memo[n] = v; return v end
local function slowfib(n) if n < 2 then return n end; return slowfib(n - 1) + slowfib(n - 2) end
local function ack(m, n)
  if m == 0 then return n + 1 end
  if n == 0 then return ack(m - 1, 1) end
  return ack(m - 1, ack(m, n - 1))
end
local is_even, is_odd
function is_even(n) if n == 0 then return true end; return is_odd(n - 1) end
function is_odd(n) if n == 0 then return false end; return is_even(n - 1) end
print("recursion", fib(90), slowfib(20), ack(2, 300), ack(3, 5), is_even(10001), is_odd(777))

-- proper tail calls: a million deep without growing the stack
local function loop(n, a) if n == 0 then return a end; return loop(n - 1, a + n) end
print("tail", loop(300000, 0))

-- deep non-tail recursion (the Lua stack grows to megabytes), and
-- recursion through C functions until the C-stack limit, caught
local function depth(n) if n == 0 then return 0 end; return 1 + depth(n - 1) end
print("deep", depth(60000))
local function through_c(n) return (("x"):gsub("x", function() return through_c(n + 1) end)) end
local ok, err = pcall(through_c, 1)
print("overflow", ok, (tostring(err):gsub("^.-:%d+: ", "")))

-- errors: values, levels, xpcall with a handler, error objects
local function thrower(kind)
  if kind == 1 then error("plain message") end
  if kind == 2 then error({ code = 42 }) end
  if kind == 3 then error("no position", 0) end
  if kind == 4 then local t = nil; return t.field end
  if kind == 5 then return 1 + {} end
  if kind == 6 then return #5 end
  return "fine"
end
for kind = 1, 7 do
  local ok2, e = pcall(thrower, kind)
  if type(e) == "table" then e = "table code " .. e.code end
  print("error", kind, ok2, (tostring(e):gsub("^[^:]*:%d+: ", "")))
end
print("xpcall", xpcall(function() error("deep") end, function(m) return "handled: " .. (m:gsub("^[^:]*:%d+: ", "")) end))
print("nested", pcall(pcall, error, "x"))
print("assert", pcall(assert, false, "assert message"), pcall(assert, 1 == 1, "unused"))

-- string.dump round trip and load with an environment
local env = { x = 5 }
local chunk = load("y = x * 2; return y + 1", "chunk", "t", env)
print("load", chunk(), env.y)
local adder = load("local a, b = ...; return a + b")
print("load args", adder(3, 4))
local dumped = string.dump(function(p) return p * 7 end)
print("dump", load(dumped, "dumped", "b")(6))
print("bad chunk", (select(2, load("return +"))):gsub("^.-:", ""))
