/*
 * main.c — the `lunar` program: a LuaJIT host around liblunar.
 *
 * Everything a person types goes to lua/lunar/cli.lua; this file only creates the Lua
 * state, points package.path at lunar's Lua modules, and turns a Lua error into a one-line
 * message and exit status 1. Modules are found beside the executable: <exe dir>/lua in the
 * build tree (a link made by CMake) or <exe dir>/../share/lunar/lua after `cmake --install`;
 * LUNAR_LUA_DIR overrides both.
 */
#include "lunar.h"

#include <dlfcn.h>
#include <libgen.h>
#include <lauxlib.h>
#include <limits.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Finds "<base>/lua" or "<base>/../share/lunar/lua"; writes the share root to `root`. */
static int find_share(const char *exe_dir, char *root, size_t n)
{
    const char *env = getenv("LUNAR_HOME");
    char probe[PATH_MAX + 64];
    if (env && *env) {
        snprintf(root, n, "%s", env);
        return 0;
    }
    snprintf(probe, sizeof probe, "%s/lua/lunar", exe_dir);
    if (is_dir(probe)) {
        snprintf(root, n, "%s", exe_dir);
        return 0;
    }
    snprintf(probe, sizeof probe, "%s/../share/lunar/lua/lunar", exe_dir);
    if (is_dir(probe)) {
        snprintf(root, n, "%s/../share/lunar", exe_dir);
        return 0;
    }
    return -1;
}

static int traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (!msg) msg = "(error object is not a string)";
    /* Errors raised for a person by the CLI start with "lunar: " and need no traceback. */
    if (strncmp(msg, "lunar: ", 7) == 0 && !getenv("LUNAR_TRACEBACK")) {
        lua_pushstring(L, msg);
        return 1;
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

int main(int argc, char **argv)
{
    char exe[PATH_MAX], exe_dir[PATH_MAX], root[PATH_MAX + 64];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len <= 0) {
        fprintf(stderr, "lunar: cannot resolve /proc/self/exe\n");
        return 1;
    }
    exe[len] = 0;
    char tmp[PATH_MAX];
    memcpy(tmp, exe, (size_t)len + 1);
    snprintf(exe_dir, sizeof exe_dir, "%s", dirname(tmp)); /* dirname edits tmp in place */
    if (find_share(exe_dir, root, sizeof root) != 0) {
        fprintf(stderr, "lunar: cannot find lunar's Lua modules beside %s (looked in lua/ and "
                        "../share/lunar/lua/); set LUNAR_HOME\n", exe);
        return 1;
    }
    /* Where liblunar.so was loaded from, so the FFI module binds the same copy. */
    Dl_info di;
    const char *libpath = "";
    if (dladdr((void *)lunar_version, &di) && di.dli_fname) libpath = di.dli_fname;

    lua_State *L = luaL_newstate();
    if (!L) {
        fprintf(stderr, "lunar: cannot create a Lua state (out of memory)\n");
        return 1;
    }
    luaL_openlibs(L);

    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    lua_pushfstring(L, "%s/lua/?.lua;%s/lua/?/init.lua;%s", root, root, lua_tostring(L, -1));
    lua_setfield(L, -3, "path");
    lua_pop(L, 2);

    lua_newtable(L);
    lua_pushstring(L, root), lua_setfield(L, -2, "home");
    lua_pushstring(L, exe), lua_setfield(L, -2, "exe");
    lua_pushstring(L, libpath), lua_setfield(L, -2, "lib");
    lua_setglobal(L, "LUNAR_HOST");

    lua_newtable(L);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i);
    }
    lua_setglobal(L, "arg");

    int status = 1;
    lua_pushcfunction(L, traceback);
    lua_getglobal(L, "require");
    lua_pushstring(L, "lunar.cli");
    if (lua_pcall(L, 1, 1, -3) != 0) {
        fprintf(stderr, "%s\n", lua_tostring(L, -1));
    } else {
        lua_getfield(L, -1, "main");
        lua_getglobal(L, "arg");
        if (lua_pcall(L, 1, 1, -4) != 0) {
            const char *m = lua_tostring(L, -1);
            fprintf(stderr, "%s\n", m ? m : "lunar: error");
        } else {
            status = lua_isnumber(L, -1) ? (int)lua_tointeger(L, -1) : 0;
        }
    }
    fflush(stdout);
    lua_close(L);
    return status;
}
