-- Runs busted (Debian's lua-busted) under LuaJIT: `luajit tests/lua/busted.lua SPEC...`.
-- Debian's /usr/bin/busted starts plain Lua; lunar's Lua needs LuaJIT's FFI.
package.path = "/usr/share/lua/5.1/?.lua;/usr/share/lua/5.1/?/init.lua;" .. package.path
require("busted.runner")({ standalone = false })
