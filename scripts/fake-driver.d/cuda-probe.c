/* cuda-probe: proves, from inside a container, that the CUDA driver library resolves through
 * the ld cache and works. Uses only the public CUDA driver API, so it runs unchanged against a
 * real NVIDIA driver. Prints one key=value line per fact:
 *   libcuda=<path the loader opened for "libcuda.so.1">   libcuda_file=<that path, resolved>
 *   marker=<gpu_youki_fake_marker() of the fake driver, or "absent" on a real driver>
 *   driver_version=<cuDriverGetVersion>   cuInit=<CUresult>
 *   device_count=<cuDeviceGetCount>       device<N>=<cuDeviceGetName>
 * Exit status: 0 when every call succeeded; 2 when libcuda.so.1 cannot be loaded; 1 when a
 * call failed (the reason on stderr). Installed at /usr/local/bin/cuda-probe by
 * scripts/test-rootfs. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <limits.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>

static void *lib;

static void *sym(const char *name)
{
    void *p = dlsym(lib, name);
    if (!p) {
        fprintf(stderr, "cuda-probe: libcuda.so.1 does not export %s\n", name);
        exit(1);
    }
    return p;
}

/* Prints key=rc and, on failure, the reason; returns rc. */
static int check(const char *key, int rc)
{
    int (*error_name)(int, const char **) = (int (*)(int, const char **))dlsym(lib, "cuGetErrorName");
    const char *name = NULL;
    if (rc == 0)
        return 0;
    if (error_name)
        error_name(rc, &name);
    printf("%s=%d\n", key, rc);
    fprintf(stderr, "cuda-probe: %s failed: %d (%s)\n", key, rc, name ? name : "unknown error");
    return rc;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0); /* keep stdout and stderr in order when both are piped */
    lib = dlopen("libcuda.so.1", RTLD_NOW);
    if (!lib) {
        printf("libcuda=none\n");
        fprintf(stderr, "cuda-probe: dlopen(libcuda.so.1): %s\n", dlerror());
        return 2;
    }
    struct link_map *map;
    char real[PATH_MAX];
    if (dlinfo(lib, RTLD_DI_LINKMAP, &map) == 0) {
        printf("libcuda=%s\n", map->l_name);
        if (realpath(map->l_name, real))
            printf("libcuda_file=%s\n", real);
    }
    const char *(*marker)(void) = (const char *(*)(void))dlsym(lib, "gpu_youki_fake_marker");
    printf("marker=%s\n", marker ? marker() : "absent");

    int (*cuInit)(unsigned int) = (int (*)(unsigned int))sym("cuInit");
    int (*cuDriverGetVersion)(int *) = (int (*)(int *))sym("cuDriverGetVersion");
    int (*cuDeviceGetCount)(int *) = (int (*)(int *))sym("cuDeviceGetCount");
    int (*cuDeviceGet)(int *, int) = (int (*)(int *, int))sym("cuDeviceGet");
    int (*cuDeviceGetName)(char *, int, int) = (int (*)(char *, int, int))sym("cuDeviceGetName");

    int version = 0, count = 0;
    if (check("driver_version", cuDriverGetVersion(&version)))
        return 1;
    printf("driver_version=%d\n", version);
    if (check("cuInit", cuInit(0)))
        return 1;
    printf("cuInit=0\n");
    if (check("device_count", cuDeviceGetCount(&count)))
        return 1;
    printf("device_count=%d\n", count);
    for (int i = 0; i < count; i++) {
        char key[32], name[256];
        int device;
        snprintf(key, sizeof key, "device%d", i);
        if (check(key, cuDeviceGet(&device, i)) || check(key, cuDeviceGetName(name, sizeof name, device)))
            return 1;
        printf("%s=%s\n", key, name);
    }
    return 0;
}
