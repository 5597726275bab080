/* The fake libnvidia-ml (see nvml.h). nvmlInit_v2 behaves like the real one towards a
 * container: it needs /proc/driver/nvidia/version and /dev/nvidiactl (else "driver not
 * loaded") and a kernel module of its own version (else "Driver/library version mismatch").
 * The devices are the GPUs of /proc/driver/nvidia/gpus, by bus id, whose /dev/nvidia<minor>
 * exists: a GPU whose node the container lacks cannot be opened, so NVML does not list it.
 * Built with -DFAKE_RM_VERSION="580.95.05" -DFAKE_CUDA_VERSION=13000. */
#include <stdio.h>
#include <string.h>

#include "common.h"
#include "nvml.h"

struct nvmlDevice_st {
    struct fake_gpu gpu;
};

static int init_count;
static unsigned int device_count;
static struct nvmlDevice_st devices[FAKE_MAX_GPUS];
static char kernel_version[64];

static nvmlReturn_t copy_string(char *dst, unsigned int length, const char *src)
{
    if (!dst)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(src) >= length)
        return NVML_ERROR_INSUFFICIENT_SIZE;
    strcpy(dst, src);
    return NVML_SUCCESS;
}

#define REQUIRE_INIT() do { if (init_count == 0) return NVML_ERROR_UNINITIALIZED; } while (0)
#define REQUIRE_DEVICE(d) do { REQUIRE_INIT(); \
        if ((d) < devices || (d) >= devices + device_count) return NVML_ERROR_INVALID_ARGUMENT; } while (0)

nvmlReturn_t nvmlInit_v2(void)
{
    static struct fake_gpu gpus[FAKE_MAX_GPUS];
    if (fake_kernel_version(kernel_version, sizeof kernel_version) != 0 ||
        !fake_is_char_device("/dev/nvidiactl"))
        return NVML_ERROR_DRIVER_NOT_LOADED;
    if (strcmp(kernel_version, FAKE_RM_VERSION) != 0)
        return NVML_ERROR_LIB_RM_VERSION_MISMATCH;
    if (init_count++ > 0)
        return NVML_SUCCESS;
    int n = fake_read_gpus(gpus, FAKE_MAX_GPUS);
    device_count = 0;
    for (int i = 0; i < n; i++) {
        char node[32];
        snprintf(node, sizeof node, "/dev/nvidia%d", gpus[i].minor);
        if (gpus[i].minor >= 0 && fake_is_char_device(node))
            devices[device_count++].gpu = gpus[i];
    }
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlShutdown(void)
{
    REQUIRE_INIT();
    init_count--;
    return NVML_SUCCESS;
}

const char *nvmlErrorString(nvmlReturn_t result)
{
    switch (result) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case NVML_ERROR_LIB_RM_VERSION_MISMATCH: return "Driver/library version mismatch";
    }
    return "Unknown Error";
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length)
{
    REQUIRE_INIT();
    return copy_string(version, length, kernel_version);
}

/* "13.580.95.05": the CUDA major the driver supports, then the driver version. */
nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length)
{
    char buf[80];
    snprintf(buf, sizeof buf, "%d.%s", FAKE_CUDA_VERSION / 1000, FAKE_RM_VERSION);
    return copy_string(version, length, buf);
}

nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *cudaDriverVersion)
{
    REQUIRE_INIT();
    if (!cudaDriverVersion)
        return NVML_ERROR_INVALID_ARGUMENT;
    *cudaDriverVersion = FAKE_CUDA_VERSION;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *deviceCount)
{
    REQUIRE_INIT();
    if (!deviceCount)
        return NVML_ERROR_INVALID_ARGUMENT;
    *deviceCount = device_count;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device)
{
    REQUIRE_INIT();
    if (!device || index >= device_count)
        return NVML_ERROR_INVALID_ARGUMENT;
    *device = &devices[index];
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length)
{
    REQUIRE_DEVICE(device);
    return copy_string(name, length, device->gpu.model);
}

nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length)
{
    REQUIRE_DEVICE(device);
    return copy_string(uuid, length, device->gpu.uuid);
}

nvmlReturn_t nvmlDeviceGetMinorNumber(nvmlDevice_t device, unsigned int *minorNumber)
{
    REQUIRE_DEVICE(device);
    if (!minorNumber)
        return NVML_ERROR_INVALID_ARGUMENT;
    *minorNumber = (unsigned int)device->gpu.minor;
    return NVML_SUCCESS;
}

/* busId as NVML prints it: 8-digit domain, upper-case hex ("00000000:1F:00.0"). */
nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t device, nvmlPciInfo_t *pci)
{
    unsigned int function = 0;
    REQUIRE_DEVICE(device);
    if (!pci)
        return NVML_ERROR_INVALID_ARGUMENT;
    memset(pci, 0, sizeof *pci);
    sscanf(device->gpu.bus_id, "%x:%x:%x.%x", &pci->domain, &pci->bus, &pci->device, &function);
    snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, "%04X:%02X:%02X.%X",
             pci->domain, pci->bus, pci->device, function);
    snprintf(pci->busId, sizeof pci->busId, "%08X:%02X:%02X.%X",
             pci->domain, pci->bus, pci->device, function);
    return NVML_SUCCESS;
}
