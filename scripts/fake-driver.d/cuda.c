/* The CUDA driver API subset of the fake libcuda, with the real signatures and error codes
 * (CUresult is an int-sized enum, CUdevice an int). Like the real driver it needs, inside the
 * container: /dev/nvidiactl and at least one /dev/nvidia<N> (else CUDA_ERROR_NO_DEVICE), a
 * kernel module of its own version (else CUDA_ERROR_SYSTEM_DRIVER_MISMATCH) and /dev/nvidia-uvm
 * (else CUDA_ERROR_UNKNOWN, the real symptom of a missing uvm node).
 * Built with -DFAKE_RM_VERSION="580.95.05" -DFAKE_CUDA_VERSION=13000. */
#include <stdio.h>
#include <string.h>

#include "common.h"

enum {
    CUDA_SUCCESS = 0,
    CUDA_ERROR_INVALID_VALUE = 1,
    CUDA_ERROR_NOT_INITIALIZED = 3,
    CUDA_ERROR_NO_DEVICE = 100,
    CUDA_ERROR_INVALID_DEVICE = 101,
    CUDA_ERROR_SYSTEM_DRIVER_MISMATCH = 803,
    CUDA_ERROR_UNKNOWN = 999,
};

static int device_count = -1; /* set by a successful cuInit */

int cuGetErrorName(int error, const char **name)
{
    static const struct { int code; const char *name; } names[] = {
        {CUDA_SUCCESS, "CUDA_SUCCESS"},
        {CUDA_ERROR_INVALID_VALUE, "CUDA_ERROR_INVALID_VALUE"},
        {CUDA_ERROR_NOT_INITIALIZED, "CUDA_ERROR_NOT_INITIALIZED"},
        {CUDA_ERROR_NO_DEVICE, "CUDA_ERROR_NO_DEVICE"},
        {CUDA_ERROR_INVALID_DEVICE, "CUDA_ERROR_INVALID_DEVICE"},
        {CUDA_ERROR_SYSTEM_DRIVER_MISMATCH, "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH"},
        {CUDA_ERROR_UNKNOWN, "CUDA_ERROR_UNKNOWN"},
    };
    if (!name)
        return CUDA_ERROR_INVALID_VALUE;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (names[i].code == error) {
            *name = names[i].name;
            return CUDA_SUCCESS;
        }
    *name = NULL;
    return CUDA_ERROR_INVALID_VALUE;
}

int cuInit(unsigned int flags)
{
    char kernel[64];
    if (flags != 0)
        return CUDA_ERROR_INVALID_VALUE;
    int count = fake_count_gpu_nodes();
    if (count == 0 || !fake_is_char_device("/dev/nvidiactl"))
        return CUDA_ERROR_NO_DEVICE;
    if (fake_kernel_version(kernel, sizeof kernel) == 0 && strcmp(kernel, FAKE_RM_VERSION) != 0)
        return CUDA_ERROR_SYSTEM_DRIVER_MISMATCH;
    if (!fake_is_char_device("/dev/nvidia-uvm"))
        return CUDA_ERROR_UNKNOWN;
    device_count = count;
    return CUDA_SUCCESS;
}

int cuDriverGetVersion(int *version)
{
    if (!version)
        return CUDA_ERROR_INVALID_VALUE;
    *version = FAKE_CUDA_VERSION;
    return CUDA_SUCCESS;
}

int cuDeviceGetCount(int *count)
{
    if (device_count < 0)
        return CUDA_ERROR_NOT_INITIALIZED;
    if (!count)
        return CUDA_ERROR_INVALID_VALUE;
    *count = device_count;
    return CUDA_SUCCESS;
}

int cuDeviceGet(int *device, int ordinal)
{
    if (device_count < 0)
        return CUDA_ERROR_NOT_INITIALIZED;
    if (!device)
        return CUDA_ERROR_INVALID_VALUE;
    if (ordinal < 0 || ordinal >= device_count)
        return CUDA_ERROR_INVALID_DEVICE;
    *device = ordinal;
    return CUDA_SUCCESS;
}

/* The Model of the n-th GPU in /proc/driver/nvidia/gpus by bus id, else "NVIDIA Fake GPU". */
int cuDeviceGetName(char *name, int len, int device)
{
    static struct fake_gpu gpus[FAKE_MAX_GPUS];
    if (device_count < 0)
        return CUDA_ERROR_NOT_INITIALIZED;
    if (!name || len <= 0)
        return CUDA_ERROR_INVALID_VALUE;
    if (device < 0 || device >= device_count)
        return CUDA_ERROR_INVALID_DEVICE;
    int n = fake_read_gpus(gpus, FAKE_MAX_GPUS);
    snprintf(name, len, "%s", device < n && gpus[device].model[0] ? gpus[device].model : "NVIDIA Fake GPU");
    return CUDA_SUCCESS;
}
