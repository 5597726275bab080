/* The fake nvidia-smi: an NVML client linked with -lnvidia-ml, so it runs only where the
 * driver's libnvidia-ml.so.1 resolves. `nvidia-smi -L` lists the GPUs, `nvidia-smi` prints a
 * short table, `nvidia-smi --version` the versions; the failure messages and exit codes are
 * the real tool's (exit code = the NVML error). Built with -DFAKE_RM_VERSION="580.95.05". */
#include <stdio.h>
#include <string.h>

#include "nvml.h"

#define RULE "+-----------------------------------------+------------------------+----------------------+"
#define ROW "| %-39s | %-22s | %-20s |\n"

static int check(nvmlReturn_t rc, const char *what)
{
    if (rc != NVML_SUCCESS)
        fprintf(stderr, "%s: %s\n", what, nvmlErrorString(rc));
    return rc;
}

static int init(void)
{
    nvmlReturn_t rc = nvmlInit_v2();
    if (rc == NVML_ERROR_DRIVER_NOT_LOADED)
        printf("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
               "Make sure that the latest NVIDIA driver is installed and running.\n\n");
    else if (rc == NVML_ERROR_LIB_RM_VERSION_MISMATCH)
        printf("Failed to initialize NVML: %s\nNVML library version: %.*s\n", nvmlErrorString(rc),
               (int)(strrchr(FAKE_RM_VERSION, '.') - FAKE_RM_VERSION), FAKE_RM_VERSION);
    else if (rc != NVML_SUCCESS)
        printf("Failed to initialize NVML: %s\n", nvmlErrorString(rc));
    return rc;
}

static int list(unsigned int count)
{
    for (unsigned int i = 0; i < count; i++) {
        nvmlDevice_t dev;
        char name[96], uuid[80];
        int rc = check(nvmlDeviceGetHandleByIndex_v2(i, &dev), "nvmlDeviceGetHandleByIndex") ||
                 check(nvmlDeviceGetName(dev, name, sizeof name), "nvmlDeviceGetName") ||
                 check(nvmlDeviceGetUUID(dev, uuid, sizeof uuid), "nvmlDeviceGetUUID");
        if (rc)
            return rc;
        printf("GPU %u: %s (UUID: %s)\n", i, name, uuid);
    }
    return 0;
}

static int table(unsigned int count)
{
    char driver[64];
    int cuda;
    int rc = check(nvmlSystemGetDriverVersion(driver, sizeof driver), "nvmlSystemGetDriverVersion") ||
             check(nvmlSystemGetCudaDriverVersion_v2(&cuda), "nvmlSystemGetCudaDriverVersion");
    if (rc)
        return rc;
    char head[192];
    snprintf(head, sizeof head, "NVIDIA-SMI %-22s Driver Version: %-16s CUDA Version: %d.%d",
             FAKE_RM_VERSION, driver, cuda / 1000, cuda % 1000 / 10);
    printf(RULE "\n| %-87s |\n" RULE "\n" ROW RULE "\n", head, "GPU  Name", "Bus-Id", "Minor");
    for (unsigned int i = 0; i < count; i++) {
        nvmlDevice_t dev;
        char name[96];
        nvmlPciInfo_t pci;
        unsigned int minor;
        rc = check(nvmlDeviceGetHandleByIndex_v2(i, &dev), "nvmlDeviceGetHandleByIndex") ||
             check(nvmlDeviceGetName(dev, name, sizeof name), "nvmlDeviceGetName") ||
             check(nvmlDeviceGetPciInfo_v3(dev, &pci), "nvmlDeviceGetPciInfo") ||
             check(nvmlDeviceGetMinorNumber(dev, &minor), "nvmlDeviceGetMinorNumber");
        if (rc)
            return rc;
        char gpu[128], minor_s[16];
        snprintf(gpu, sizeof gpu, "%3u  %s", i, name);
        snprintf(minor_s, sizeof minor_s, "%u", minor);
        printf(ROW, gpu, pci.busId, minor_s);
    }
    printf(RULE "\n");
    return 0;
}

int main(int argc, char **argv)
{
    const char *arg = argc > 1 ? argv[1] : "";
    if (argc > 2 || (*arg && strcmp(arg, "-L") && strcmp(arg, "--list-gpus") && strcmp(arg, "--version"))) {
        fprintf(stderr, "usage: nvidia-smi [-L | --list-gpus | --version] (gpu-youki fake driver)\n");
        return 2;
    }
    int rc = init();
    if (rc)
        return rc;
    if (!strcmp(arg, "--version")) {
        char nvml[80], driver[64];
        int cuda;
        rc = check(nvmlSystemGetNVMLVersion(nvml, sizeof nvml), "nvmlSystemGetNVMLVersion") ||
             check(nvmlSystemGetDriverVersion(driver, sizeof driver), "nvmlSystemGetDriverVersion") ||
             check(nvmlSystemGetCudaDriverVersion_v2(&cuda), "nvmlSystemGetCudaDriverVersion");
        if (!rc)
            printf("NVIDIA-SMI version  : %s\nNVML version        : %s\nDRIVER version      : %s\n"
                   "CUDA Version        : %d.%d\n", FAKE_RM_VERSION, nvml, driver, cuda / 1000, cuda % 1000 / 10);
        nvmlShutdown();
        return rc;
    }
    unsigned int count;
    rc = check(nvmlDeviceGetCount_v2(&count), "nvmlDeviceGetCount");
    if (!rc && count == 0) {
        printf(*arg ? "No devices found.\n" : "No devices were found\n");
        rc = 6; /* NVML_ERROR_NOT_FOUND, as the real tool */
    } else if (!rc) {
        rc = *arg ? list(count) : table(count);
    }
    nvmlShutdown();
    return rc;
}
