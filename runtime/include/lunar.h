/*
 * lunar.h — the public C API of liblunar, the engine without Lua.
 *
 * This header is the map of the library: every public type and function is declared and
 * commented here or in a header under lunar/ that this one includes. Conventions:
 *   - Functions return int status: 0 (LUNAR_OK) or a negative LUNAR_E* code. The specifics
 *     (file, tensor, field) are in lunar_errmsg(), a thread-local string valid until the next
 *     failing call on the same thread.
 *   - Handles are opaque. Whoever creates frees: every _create/_load has a _free, and the
 *     ownership of every pointer crossing the API is stated beside the function.
 *   - Only plain C types cross the API, so the LuaJIT FFI binding (lua/lunar/ffi.lua) can
 *     declare it verbatim.
 */
#ifndef LUNAR_H
#define LUNAR_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- status codes ------------------------------------------------------------------- */
enum {
    LUNAR_OK = 0,
    LUNAR_EINVAL = -1,       /* invalid argument or value */
    LUNAR_ENOENT = -2,       /* file or folder missing */
    LUNAR_EIO = -3,          /* read/write failed */
    LUNAR_EFORMAT = -4,      /* malformed file (JSON, safetensors, pickle, tokenizer) */
    LUNAR_ENOMEM = -5,       /* host or device allocation failed */
    LUNAR_EUNSUPPORTED = -6, /* valid input that lunar does not implement */
    LUNAR_EDEVICE = -7,      /* CUDA / cuBLAS / NCCL error */
    LUNAR_ERANGE = -8,       /* value out of range (lengths, ids, sizes) */
    LUNAR_ESTATE = -9,       /* call not valid in the object's current state */
};

/* The message of the last failure on this thread ("" if none). Owned by liblunar. */
const char *lunar_errmsg(void);
/* The symbolic name of a status code ("LUNAR_EFORMAT"). Static string. */
const char *lunar_strerror(int status);

/* ---- logging ------------------------------------------------------------------------ */
enum { LUNAR_LOG_DEBUG = 0, LUNAR_LOG_INFO = 1, LUNAR_LOG_WARN = 2, LUNAR_LOG_ERROR = 3, LUNAR_LOG_OFF = 4 };
/* Messages below `level` are dropped. Default INFO, or LUNAR_LOG_LEVEL from the environment
 * (debug|info|warning|error|off) read once at the first log call. Thread-safe. */
void lunar_log_set_level(int level);
int lunar_log_get_level(void);
/* Writes "LEVEL mm-dd hh:mm:ss.mmm [where] message" to stderr. */
void lunar_log(int level, const char *where, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- build and device information --------------------------------------------------- */
const char *lunar_version(void);   /* "0.1.0" */
/* Build facts as a JSON object string: version, build_type, cuda (bool), cuda_runtime,
 * cublas, nccl (version strings or null), compiled architectures. Static string. */
const char *lunar_build_info(void);

typedef struct lunar_device_info {
    char name[256];
    int index;
    int cc_major, cc_minor;   /* compute capability */
    uint64_t total_bytes;     /* device memory */
    uint64_t free_bytes;      /* free now */
    int multiprocessors;
} lunar_device_info_t;

/* Number of CUDA devices visible (0 without CUDA, driver or GPU; never an error). */
int lunar_device_count(void);
/* Fills *out for device `index`. LUNAR_ERANGE if no such device. */
int lunar_device_get_info(int index, lunar_device_info_t *out);
/* The CUDA driver's version as 1000*major + 10*minor, or 0 when no driver is present. */
int lunar_cuda_driver_version(void);

#ifdef __cplusplus
}
#endif

/* ---- modules ---- */
#include "lunar/model.h"
#include "lunar/engine.h"
#include "lunar/runner.h"
#ifdef LUNAR_HAVE_H2O
#include "lunar/http.h"
#endif
#include "lunar/tokenizer.h"

#endif /* LUNAR_H */
