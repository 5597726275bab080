/* The fake libnvidia-ml (see nvml.h). nvmlInit_v2 behaves like the real one towards a
 * container: it needs /proc/driver/nvidia/version and /dev/nvidiactl (else "driver not
 * loaded") and a kernel module of its own version (else "Driver/library version mismatch").
 * The devices are the GPUs of /proc/driver/nvidia/gpus, by bus id, whose /dev/nvidia<minor>
 * exists: a GPU whose node the container lacks cannot be opened, so NVML does not list it.
 * A GPU in MIG mode (it has /proc/driver/nvidia/capabilities/gpu<minor>/mig) has the MIG
 * devices whose gi<I>/ci<C>/access files are visible, indexed by GPU instance id descending
 * then compute instance id (deliberately not the directory order, so a runtime's `N:M` must
 * come from NVML), with UUID "MIG-" + the parent UUID's hex but the last four digits, which are
 * %02x%02x of the two ids.
 * Built with -DFAKE_RM_VERSION="580.95.05" -DFAKE_CUDA_VERSION=13000. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "nvml.h"

#define FAKE_MAX_MIG 7

struct nvmlDevice_st {
    struct fake_gpu gpu;
    int mig_mode;                     /* a full GPU in MIG mode */
    unsigned int mig_count;
    struct nvmlDevice_st *migs;       /* its MIG devices, FAKE_MAX_MIG slots */
    int is_mig;                       /* a MIG device: gpu is the parent's */
    unsigned int gi, ci;
    char mig_uuid[80];
};

static int init_count;
static unsigned int device_count;
static struct nvmlDevice_st devices[FAKE_MAX_GPUS];
static struct nvmlDevice_st mig_devices[FAKE_MAX_GPUS][FAKE_MAX_MIG];

/* The numbers N of the entries <prefix>N of dir, ascending; returns the count. */
static int numbered(const char *dir, const char *prefix, unsigned int *out, int max)
{
    DIR *d = opendir(dir);
    int n = 0;
    size_t len = strlen(prefix);
    struct dirent *e;
    if (!d)
        return 0;
    while (n < max && (e = readdir(d))) {
        const char *digits = e->d_name + len;
        if (strncmp(e->d_name, prefix, len) || !*digits ||
            strspn(digits, "0123456789") != strlen(digits))
            continue;
        out[n++] = (unsigned int)atoi(digits);
    }
    closedir(d);
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && out[j - 1] > out[j]; j--) {
            unsigned int t = out[j];
            out[j] = out[j - 1];
            out[j - 1] = t;
        }
    return n;
}

static void read_mig_devices(struct nvmlDevice_st *gpu, struct nvmlDevice_st *slots)
{
    char dir[4608], rel[256];
    unsigned int gis[16], cis[8];
    snprintf(rel, sizeof rel, "/proc/driver/nvidia/capabilities/gpu%d/mig", gpu->gpu.minor);
    fake_path(dir, sizeof dir, rel);
    gpu->migs = slots;
    gpu->mig_count = 0;
    gpu->mig_mode = access(dir, F_OK) == 0;
    int n_gi = numbered(dir, "gi", gis, 16);
    for (int g = n_gi - 1; g >= 0; g--) {
        char gi_dir[4700];
        snprintf(gi_dir, sizeof gi_dir, "%s/gi%u", dir, gis[g]);
        int n_ci = numbered(gi_dir, "ci", cis, 8);
        for (int c = 0; c < n_ci && gpu->mig_count < FAKE_MAX_MIG; c++) {
            char access_file[4800];
            snprintf(access_file, sizeof access_file, "%s/ci%u/access", gi_dir, cis[c]);
            if (access(access_file, R_OK) != 0)
                continue;
            struct nvmlDevice_st *mig = &slots[gpu->mig_count++];
            memset(mig, 0, sizeof *mig);
            mig->gpu = gpu->gpu;
            mig->is_mig = 1;
            mig->gi = gis[g];
            mig->ci = cis[c];
            snprintf(mig->mig_uuid, sizeof mig->mig_uuid, "MIG-%.32s%02x%02x", gpu->gpu.uuid + 4,
                     mig->gi, mig->ci);
        }
    }
}

static int is_mig_handle(nvmlDevice_t d)
{
    return (void *)d >= (void *)mig_devices && (void *)d < (void *)(mig_devices + device_count);
}
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
#define REQUIRE_ANY_DEVICE(d) do { REQUIRE_INIT(); \
        if (!is_mig_handle(d) && ((d) < devices || (d) >= devices + device_count)) \
            return NVML_ERROR_INVALID_ARGUMENT; } while (0)
#define REQUIRE_MIG(d) do { REQUIRE_INIT(); \
        if (!is_mig_handle(d) || !(d)->is_mig) return NVML_ERROR_INVALID_ARGUMENT; } while (0)

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
        if (gpus[i].minor >= 0 && fake_is_char_device(node)) {
            devices[device_count].gpu = gpus[i];
            read_mig_devices(&devices[device_count], mig_devices[device_count]);
            device_count++;
        }
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
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
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
    REQUIRE_ANY_DEVICE(device);
    return copy_string(uuid, length, device->is_mig ? device->mig_uuid : device->gpu.uuid);
}

/* Every fake GPU is MIG capable (an H100); MIG mode as the capability directory says. */
nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t device, unsigned int *currentMode,
                                  unsigned int *pendingMode)
{
    REQUIRE_DEVICE(device);
    if (!currentMode || !pendingMode)
        return NVML_ERROR_INVALID_ARGUMENT;
    *currentMode = *pendingMode = (unsigned int)device->mig_mode;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(nvmlDevice_t device, unsigned int *count)
{
    REQUIRE_DEVICE(device);
    if (!count)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (!device->mig_mode)
        return NVML_ERROR_NOT_SUPPORTED;
    *count = FAKE_MAX_MIG;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(nvmlDevice_t device, unsigned int index,
                                                 nvmlDevice_t *migDevice)
{
    REQUIRE_DEVICE(device);
    if (!migDevice || index >= FAKE_MAX_MIG)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (!device->mig_mode)
        return NVML_ERROR_NOT_SUPPORTED;
    if (index >= device->mig_count)
        return NVML_ERROR_NOT_FOUND;
    *migDevice = &device->migs[index];
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetGpuInstanceId(nvmlDevice_t device, unsigned int *id)
{
    REQUIRE_MIG(device);
    if (!id)
        return NVML_ERROR_INVALID_ARGUMENT;
    *id = device->gi;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetComputeInstanceId(nvmlDevice_t device, unsigned int *id)
{
    REQUIRE_MIG(device);
    if (!id)
        return NVML_ERROR_INVALID_ARGUMENT;
    *id = device->ci;
    return NVML_SUCCESS;
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
