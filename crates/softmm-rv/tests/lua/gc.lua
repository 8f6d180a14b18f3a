-- Memory: garbage churn, big arrays and strings (glibc's malloc serves
-- them with mmap, grows them with mremap and gives them back with munmap),
-- finalizers, both collector modes.
local function kb() return collectgarbage("count") end

-- churn: short-lived tables and strings
local base = kb()
local live = {}
for i = 1, 40000 do
  local t = { i, tostring(i), { i * 2 } }
  if i % 100 == 0 then live[#live + 1] = t end
end
collectgarbage("collect")
print("churn", #live, live[#live][2], kb() < base + 4096)

-- a big array part grown by doubling (realloc of an mmap'd block: mremap)
local big = {}
for i = 1, 1000000 do big[i] = i end
local s = 0
for i = 1, #big, 1000 do s = s + big[i] end
print("big array", #big, s, kb() > base + 16384)
big = nil
collectgarbage("collect")
print("big array freed", kb() < base + 8192)

-- big strings: rep, concatenation, a growing buffer
local chunk = string.rep("0123456789abcdef", 4096)          -- 64 KiB
local huge = string.rep(chunk, 320)                          -- 20 MiB
print("huge", #huge, huge:sub(1000001, 1000016), huge:byte(-1))
local doubled = huge .. huge                                 -- 40 MiB
print("doubled", #doubled, doubled:find("f0", #huge, true))
huge, doubled = nil, nil
collectgarbage("collect")
local pieces = {}
for i = 1, 50000 do pieces[i] = string.format("%07d", i) end
local joined = table.concat(pieces)                          -- buffer grows by realloc
print("joined", #joined, joined:sub(-14))
pieces, joined = nil, nil
collectgarbage("collect")
print("strings freed", kb() < base + 8192)

-- repeated grow and drop: each round maps and unmaps its memory again
local sizes = 0
for round = 1, 4 do
  local t = {}
  for i = 1, 50000 * round do t[i] = i end
  local str = string.rep(chunk, 48 * round)
  sizes = sizes + #t + #str
  t, str = nil, nil
  collectgarbage("collect")
end
print("rounds", sizes, kb() < base + 8192)

-- finalizers
local finalized = 0
do
  local mt = { __gc = function() finalized = finalized + 1 end }
  for i = 1, 3000 do setmetatable({}, mt) end
end
collectgarbage("collect")
collectgarbage("collect")
print("finalized", finalized)

-- resurrection through a finalizer
local saved
do
  setmetatable({ name = "phoenix" }, { __gc = function(o) saved = o end })
end
collectgarbage("collect")
print("resurrected", saved and saved.name)

-- generational mode: many young objects, a few survivors
print("mode", collectgarbage("generational"))
local keep = {}
for i = 1, 50000 do
  local t = { i }
  if i % 1000 == 0 then keep[#keep + 1] = t end
end
collectgarbage("step", 0)
print("survivors", #keep, keep[50][1])
print("mode", collectgarbage("incremental"))
for i = 1, 20000 do local _ = { i, i } end
collectgarbage("collect")
print("step", collectgarbage("step", 100), collectgarbage("isrunning"))

-- interned and non-interned strings
local set = {}
for i = 1, 20000 do set["s" .. (i % 5000)] = i end
local n = 0
for _ in pairs(set) do n = n + 1 end
local long = {}
for i = 1, 2000 do long[i] = string.rep("L", 50) .. i end
collectgarbage("collect")
print("interned", n, set.s0, set.s4999, #long[2000])
