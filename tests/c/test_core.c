/* test_core.c — error messages, status names, version and device queries without a GPU. */
#include "check.h"
#include "core/error.h"
#include "lunar.h"

static int fails_with_format(const char *file)
{
    return lunar_error(LUNAR_EFORMAT, "%s: tensor %s: bad dtype", file, "w");
}

int main(void)
{
    CHECK_EQ_INT(fails_with_format("a.safetensors"), LUNAR_EFORMAT);
    CHECK_STR(lunar_errmsg(), "a.safetensors: tensor w: bad dtype");
    CHECK_STR(lunar_strerror(LUNAR_ENOENT), "LUNAR_ENOENT");
    CHECK_STR(lunar_strerror(12345), "LUNAR_E?");
    lunar_error_clear();
    CHECK_STR(lunar_errmsg(), "");

    CHECK(lunar_version()[0] != 0);
    CHECK_CONTAINS(lunar_build_info(), "\"version\":");

    int n = lunar_device_count();
    CHECK(n >= 0);
    lunar_device_info_t di;
    CHECK_EQ_INT(lunar_device_get_info(n, &di), LUNAR_ERANGE);
    CHECK_CONTAINS(lunar_errmsg(), "no CUDA device");
    CHECK_EQ_INT(lunar_device_get_info(0, NULL), LUNAR_EINVAL);

    lunar_log_set_level(LUNAR_LOG_ERROR);
    CHECK_EQ_INT(lunar_log_get_level(), LUNAR_LOG_ERROR);
    lunar_log(LUNAR_LOG_INFO, "test", "dropped %d", 1);
    return CHECK_DONE();
}
