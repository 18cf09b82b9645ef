/*
 * log.c — leveled logging to stderr, in the shape vLLM users read ("INFO 11-24 10:00:00.123").
 *
 * One mutex around the write keeps lines from different threads whole.
 */
#include "lunar.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

static int log_level = -1;
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;

static int level_from_env(void)
{
    const char *e = getenv("LUNAR_LOG_LEVEL");
    if (!e) return LUNAR_LOG_INFO;
    if (!strcasecmp(e, "debug")) return LUNAR_LOG_DEBUG;
    if (!strcasecmp(e, "warning") || !strcasecmp(e, "warn")) return LUNAR_LOG_WARN;
    if (!strcasecmp(e, "error")) return LUNAR_LOG_ERROR;
    if (!strcasecmp(e, "off") || !strcasecmp(e, "critical")) return LUNAR_LOG_OFF;
    return LUNAR_LOG_INFO;
}

void lunar_log_set_level(int level) { __atomic_store_n(&log_level, level, __ATOMIC_RELAXED); }

int lunar_log_get_level(void)
{
    int l = __atomic_load_n(&log_level, __ATOMIC_RELAXED);
    if (l < 0) {
        l = level_from_env();
        __atomic_store_n(&log_level, l, __ATOMIC_RELAXED);
    }
    return l;
}

void lunar_log(int level, const char *where, const char *fmt, ...)
{
    static const char *names[] = {"DEBUG", "INFO", "WARNING", "ERROR"};
    if (level < lunar_log_get_level() || level >= LUNAR_LOG_OFF) return;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    localtime_r(&tv.tv_sec, &tm);
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&log_mu);
    fprintf(stderr, "%s %02d-%02d %02d:%02d:%02d.%03d [%s] %s\n", names[level], tm.tm_mon + 1,
            tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(tv.tv_usec / 1000),
            where ? where : "lunar", msg);
    pthread_mutex_unlock(&log_mu);
}
