-- Tables: arrays, hashes, the table library, metatables, weak tables.
local function sorted_keys(t)
  local ks = {}
  for k in pairs(t) do ks[#ks + 1] = k end
  table.sort(ks, function(a, b)
    if type(a) == type(b) then return a < b end
    return type(a) < type(b)
  end)
  return ks
end

-- array growth and the length operator
local a = {}
for i = 1, 30000 do a[i] = i * 3 end
local s = 0
for i = 1, #a do s = s + a[i] end
print("array", #a, s)
for i = 1, 15000 do a[#a] = nil end
print("shrunk", #a, a[#a])
table.insert(a, 1, -1)
table.insert(a, 7)
print("insert", #a, a[1], a[2], a[#a], table.remove(a, 1), table.remove(a), #a)
print("move", table.concat(table.move({1, 2, 3, 4, 5}, 2, 4, 1), ","), table.concat(table.move({1, 2, 3}, 1, 3, 3, {9, 9}), ","))
print("unpack", table.unpack({1, 2, 3, nil, 5}, 1, 5))
print("pack", table.pack(1, nil, 3).n, select("#", table.unpack({}, 1, 3)))

-- hash part: many keys of several types
local h = {}
for i = 1, 5000 do h["k" .. i] = i; h[i + 0.5] = -i end
h[true] = "t"; h[false] = "f"
local count, total = 0, 0
for k, v in pairs(h) do
  count = count + 1
  if type(v) == "number" then total = total + v end
end
print("hash", count, total, h.k777, h[10.5], h[true])
for i = 1, 5000, 2 do h["k" .. i] = nil end
count = 0
for _ in pairs(h) do count = count + 1 end
print("after delete", count)
local small = { x = 1, y = 2, z = 3, [1] = "one", [2] = "two", [10] = "ten" }
local ks = sorted_keys(small)
local shown = {}
for _, k in ipairs(ks) do shown[#shown + 1] = tostring(k) .. "=" .. tostring(small[k]) end
print("keys", table.concat(shown, " "))

-- sorting: numbers, records with a comparator, stability not assumed
local seedx = 12345
local function rnd(n) seedx = (seedx * 1103515245 + 12345) % 2147483648; return seedx % n end
local nums = {}
for i = 1, 5000 do nums[i] = rnd(1000000) end
table.sort(nums)
local ok = true
for i = 2, #nums do if nums[i - 1] > nums[i] then ok = false end end
print("sort", ok, nums[1], nums[2500], nums[5000])
local people = {}
for i = 1, 500 do people[i] = { name = "p" .. rnd(100), age = rnd(90), id = i } end
table.sort(people, function(p, q)
  if p.age ~= q.age then return p.age > q.age end
  if p.name ~= q.name then return p.name < q.name end
  return p.id < q.id
end)
print("records", people[1].name, people[1].age, people[1].id, people[500].name, people[500].age, people[500].id)
table.sort(nums, function(x, y) return x > y end)
print("reverse", nums[1], nums[5000])

-- metatables
local Vec = {}
Vec.__index = Vec
function Vec.new(x, y) return setmetatable({ x = x, y = y }, Vec) end
function Vec.__add(p, q) return Vec.new(p.x + q.x, p.y + q.y) end
function Vec.__mul(p, k) return Vec.new(p.x * k, p.y * k) end
function Vec.__eq(p, q) return p.x == q.x and p.y == q.y end
function Vec.__lt(p, q) return p:len2() < q:len2() end
function Vec.__le(p, q) return p:len2() <= q:len2() end
function Vec.__tostring(p) return "(" .. p.x .. "," .. p.y .. ")" end
function Vec.__concat(p, q) return tostring(p) .. tostring(q) end
function Vec.__len(p) return 2 end
function Vec.__unm(p) return Vec.new(-p.x, -p.y) end
function Vec:len2() return self.x * self.x + self.y * self.y end
local v = Vec.new(1, 2) + Vec.new(3, 4) * 2
print("vec", tostring(v), tostring(-v), #v, tostring(v == Vec.new(7, 10)), tostring(Vec.new(1, 1) < v),
  tostring(v <= v), Vec.new(0, 1) .. Vec.new(2, 3))
local defaults = setmetatable({}, { __index = function(t, k) return k .. "?" end })
print("index", defaults.foo, rawget(defaults, "foo"))
local log = {}
local proxy = setmetatable({}, { __newindex = function(t, k, val) log[#log + 1] = k; rawset(t, k, val * 2) end })
proxy.a = 1; proxy.b = 2; proxy.a = 5
print("newindex", table.concat(log, ","), proxy.a, proxy.b)
local callable = setmetatable({}, { __call = function(self, x, y) return x * y, "called" end })
print("call", callable(6, 7))
local counter = setmetatable({}, { __index = function(t, k) local n = 0; for i = 1, k do n = n + i end; t[k] = n; return n end })
print("memo", counter[100], counter[1000], rawget(counter, 100))
local closed = {}
do
  local res <close> = setmetatable({}, { __close = function() closed[#closed + 1] = "closed" end })
  closed[#closed + 1] = "open"
end
print("close", table.concat(closed, ","))

-- inheritance chain
local Base = { kind = "base" }
Base.__index = Base
function Base:describe() return self.kind .. ":" .. self.name end
local Derived = setmetatable({ kind = "derived" }, { __index = Base })
Derived.__index = Derived
local obj = setmetatable({ name = "obj" }, Derived)
print("inherit", obj:describe(), getmetatable(obj) == Derived, rawequal(obj, obj))

-- weak tables
local weak = setmetatable({}, { __mode = "k" })
local keep = {}
for i = 1, 1000 do
  local k = {}
  weak[k] = i
  if i % 10 == 0 then keep[#keep + 1] = k end
end
collectgarbage("collect")
collectgarbage("collect")
local left = 0
for _ in pairs(weak) do left = left + 1 end
print("weak keys left", left)
local weakv = setmetatable({}, { __mode = "v" })
for i = 1, 100 do weakv[i] = { i } end
weakv[101] = keep[1]
collectgarbage("collect")
local vleft = 0
for _ in pairs(weakv) do vleft = vleft + 1 end
print("weak values left", vleft)

-- nested structures
local tree = {}
for i = 1, 200 do
  local node = tree
  for d = 1, 5 do
    local key = (i * d) % 7
    node[key] = node[key] or {}
    node = node[key]
  end
  node.leaf = (node.leaf or 0) + i
end
local function walk(t, depth)
  local n, sum = 0, 0
  for _, k in ipairs(sorted_keys(t)) do
    if k == "leaf" then sum = sum + t[k]; n = n + 1
    else local a2, b2 = walk(t[k], depth + 1); n = n + a2; sum = sum + b2 end
  end
  return n, sum
end
print("tree", walk(tree, 0))
