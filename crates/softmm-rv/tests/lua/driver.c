/*
 * A standalone Lua interpreter front end of our own (the lua-src crate ships
 * Lua's library sources, not its lua.c):
 *
 *   lua SCRIPT [ARGS...]
 *
 * opens the standard libraries, sets the global `arg` as lua.c does
 * (arg[0] = SCRIPT, arg[1..] = ARGS, arg[-1] = the interpreter), runs the
 * script with ARGS as its `...`, and exits 0; on an error it prints
 * "lua: MESSAGE" and a traceback to stderr and exits 1. `os.exit` works as
 * in lua.c (it closes the state when asked to).
 */
#include <stdio.h>
#include <stdlib.h>

#include "lauxlib.h"
#include "lua.h"
#include "lualib.h"

static int traceback(lua_State *L) {
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
            return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* Runs in protected mode: argv and argc come as light userdata/integer. */
static int run(lua_State *L) {
    int argc = (int)lua_tointeger(L, 1);
    char **argv = (char **)lua_touserdata(L, 2);
    luaL_checkversion(L);
    luaL_openlibs(L);
    lua_createtable(L, argc - 2, 2);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - 1);
    }
    lua_setglobal(L, "arg");
    lua_pushcfunction(L, traceback);
    int handler = lua_gettop(L);
    if (luaL_loadfile(L, argv[1]) != LUA_OK)
        return lua_error(L);
    for (int i = 2; i < argc; i++)
        lua_pushstring(L, argv[i]);
    if (lua_pcall(L, argc - 2, 0, handler) != LUA_OK)
        return lua_error(L);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s SCRIPT [ARGS...]\n", argv[0]);
        return 2;
    }
    lua_State *L = luaL_newstate();
    if (L == NULL) {
        fprintf(stderr, "lua: cannot create a state: not enough memory\n");
        return 1;
    }
    lua_pushcfunction(L, run);
    lua_pushinteger(L, argc);
    lua_pushlightuserdata(L, argv);
    int status = lua_pcall(L, 2, 0, 0);
    if (status != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        fprintf(stderr, "lua: %s\n", msg ? msg : "(error object is not a string)");
        fflush(stderr);
    }
    lua_close(L);
    return status == LUA_OK ? EXIT_SUCCESS : EXIT_FAILURE;
}
