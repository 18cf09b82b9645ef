/*
 * error.c — the thread-local error message behind lunar_errmsg().
 *
 * Library code never prints or exits on bad input: it records what went wrong here and
 * returns a negative status, so the caller (CLI, server, test) decides what a person sees.
 */
#include "core/error.h"

#include <stdarg.h>
#include <stdio.h>

static _Thread_local char errbuf[1024];

const char *lunar_errmsg(void) { return errbuf; }

int lunar_error(int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errbuf, sizeof errbuf, fmt, ap);
    va_end(ap);
    return status;
}

void lunar_error_clear(void) { errbuf[0] = 0; }

const char *lunar_strerror(int status)
{
    switch (status) {
    case LUNAR_OK: return "LUNAR_OK";
    case LUNAR_EINVAL: return "LUNAR_EINVAL";
    case LUNAR_ENOENT: return "LUNAR_ENOENT";
    case LUNAR_EIO: return "LUNAR_EIO";
    case LUNAR_EFORMAT: return "LUNAR_EFORMAT";
    case LUNAR_ENOMEM: return "LUNAR_ENOMEM";
    case LUNAR_EUNSUPPORTED: return "LUNAR_EUNSUPPORTED";
    case LUNAR_EDEVICE: return "LUNAR_EDEVICE";
    case LUNAR_ERANGE: return "LUNAR_ERANGE";
    case LUNAR_ESTATE: return "LUNAR_ESTATE";
    default: return "LUNAR_E?";
    }
}
