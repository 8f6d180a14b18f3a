-- String operations: formatting, patterns, packing, utf8, building.
local out = {}
local function say(...)
  local t = table.pack(...)
  for i = 1, t.n do t[i] = tostring(t[i]) end
  out[#out + 1] = table.concat(t, " ", 1, t.n)
end

-- string.format with every common conversion
for _, v in ipairs({0, 1, -1, 42, 255, 65535, 2^31, -2^53, math.maxinteger, math.mininteger}) do
  say(string.format("%d %5d %-5d| %x %X %o %q", math.tointeger(v) or 0, math.tointeger(v) or 0,
    math.tointeger(v) or 0, math.tointeger(v) or 0, math.tointeger(v) or 0,
    math.tointeger(v) or 0, math.tointeger(v) or 0))
end
for _, v in ipairs({0.0, -0.0, 1/3, 2/3, 1e300, -1e-300, 123456.789, 2^63, 0.1 + 0.2, math.pi, math.huge, -math.huge}) do
  say(string.format("%g %.3f %e %10.4g %.17g %a", v, v, v, v, v, v), tostring(v))
end
say(string.format("%s|%10s|%-10s|%.3s", "abc", "right", "left", "truncate"))
say(string.format("%q", "line\nbreak\0nul\"quote\\ \200\r"))
say(string.format("%c%c%c", 76, 117, 97), string.format("%%"), string.format("%5.1s|", "xyz"))

-- numbers and conversions
say(tostring(10 // 3), tostring(10.0 // 3), tostring(-7 // 2), tostring(-7 % 3), tostring(7 % -3),
  tostring(-7.5 % 2), tostring(3 / 2), tostring(2^53 + 1), tostring(math.maxinteger + 1 == math.mininteger))
say(tostring(tonumber("0x1p4")), tostring(tonumber("  12  ")), tostring(tonumber("1e2")),
  tostring(tonumber("z", 36)), tostring(tonumber("777", 8)), tostring(tonumber("bad")), tostring(tonumber("0x")))
say(tostring(math.tointeger(3.0)), tostring(math.tointeger(3.5)), tostring(3 | 0), tostring(1 << 63), tostring(-1 >> 1))
say(math.type(1), math.type(1.0), math.type("1"), tostring(1 == 1.0), tostring("10" + 5), tostring("3" * "4"))

-- patterns
local text = "The quick brown fox jumps over the lazy dog; 123 apples, 45 pears and 6 plums."
say(text:upper(), text:lower(), text:len(), #text:reverse())
say(text:find("fox"), text:find("o", 20, true), text:find("%d+"), text:match("(%d+) (%a+)"))
for w in text:gmatch("%a+") do if #w > 4 then say("word", w) end end
for n, fruit in text:gmatch("(%d+) (%a+)") do say("fruit", fruit, n * 2) end
say((text:gsub("%w+", function(w) return #w end)))
say((text:gsub("(%a)(%a*)", "%2%1ay")))
say(text:gsub("[aeiou]", { a = "4", e = "3", o = "0" }))
say(("hello world"):gsub("o", "0", 1))
say(("  trim me  "):match("^%s*(.-)%s*$") .. "|")
say(("key = value # comment"):match("^(%w+)%s*=%s*(%w+)"))
say(("f(a(b)c)d"):match("%b()"), ("THE (quick) fox"):find("%f[%a]%a+"), ("x"):rep(5, "-"))
say(("2024-01-15"):match("(%d+)-(%d+)-(%d+)"))
local parts = {}
for field in ("a,b,,c,"):gmatch("([^,]*),?") do parts[#parts + 1] = "[" .. field .. "]" end
say(table.concat(parts))

-- bytes, chars, packing
local bytes = {}
for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end
local all = table.concat(bytes)
local sum = 0
for i = 1, #all do sum = sum + all:byte(i) * i end
say("bytes", #all, sum, all:byte(1, 3), all:byte(-1))
local packed = string.pack("<i4 >i8 d s2 z B", -2, 1 << 40, 1.5, "pack", "zero", 200)
say(#packed, string.unpack("<i4 >i8 d s2 z B", packed))
say(string.packsize("i4 i8 d"), string.unpack("<I2", "\1\2"), string.unpack(">I2", "\1\2"))

-- utf8
local u = "héllo wörld ✓ 𝄞"
say(utf8.len(u), #u, utf8.char(72, 233, 10003, 119070), utf8.codepoint(u, 1, 3))
local cps = {}
for p, c in utf8.codes(u) do cps[#cps + 1] = p .. ":" .. c end
say(table.concat(cps, " "))
say(utf8.offset(u, 3), utf8.offset(u, -1), utf8.charpattern)

-- building long strings: concatenation, rep, table.concat
local acc = ""
for i = 1, 1000 do acc = acc .. string.format("%04d;", i) end
say("acc", #acc, acc:sub(1, 20), acc:sub(-10))
local big = string.rep("abcdefghij", 20000)
say("big", #big, select(2, big:gsub("j", "")), big:find("jab", 199990, true))
local pieces = {}
for i = 1, 10000 do pieces[i] = tostring(i * i) end
local joined = table.concat(pieces, ",")
local h = 0
for i = 1, #joined, 7 do h = (h * 31 + joined:byte(i)) % 1000000007 end
say("joined", #joined, h)

-- sorting strings and comparisons
local words = {}
for w in ("pear Apple banana apple Banana cherry date Elder fig grape"):gmatch("%S+") do words[#words + 1] = w end
table.sort(words)
say(table.concat(words, " "))
table.sort(words, function(a, b) return a:lower() < b:lower() or (a:lower() == b:lower() and a < b) end)
say(table.concat(words, " "))
say(tostring("a" < "b"), tostring("Z" < "a"), tostring("abc" < "abd"), tostring("" < "a"), tostring("10" < "9"))

for _, line in ipairs(out) do print(line) end
