/*
 * core/error.h — private helpers for setting the thread-local error message.
 *
 *   return lunar_error(LUNAR_EFORMAT, "%s: tensor %s: offsets past end of file", path, name);
 */
#ifndef LUNAR_CORE_ERROR_H
#define LUNAR_CORE_ERROR_H
#include "lunar.h"

/* Formats the message for lunar_errmsg() and returns `status`, for `return lunar_error(...)`. */
int lunar_error(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void lunar_error_clear(void);

#endif
