/* Helpers shared by the fake libcuda and libnvidia-ml: what the fake "driver" knows is read
 * from the same files a real one exposes (/proc/driver/nvidia, /dev/nvidia*), so a container
 * sees exactly the GPUs its runtime gave it. Linked into each library with hidden visibility. */
#ifndef FAKE_COMMON_H
#define FAKE_COMMON_H

#include <stddef.h>

#define FAKE_MAX_GPUS 256

struct fake_gpu {
    char bus_id[32];  /* "Bus Location", e.g. 0000:10:00.0 */
    char model[96];   /* "Model" */
    char uuid[80];    /* "GPU UUID" */
    int minor;        /* "Device Minor", -1 when absent */
};

#define HIDDEN __attribute__((visibility("hidden")))

/* GPUs of /proc/driver/nvidia/gpus/<busid>/information, sorted by bus id; returns the count. */
HIDDEN int fake_read_gpus(struct fake_gpu *gpus, int max);
/* `path` (absolute) inside the driver tree the library was loaded from, written to buf. */
HIDDEN const char *fake_path(char *buf, size_t len, const char *path);
/* 1 when path (followed, inside the tree) is a character device. */
HIDDEN int fake_is_char_device(const char *path);
/* Number of /dev/nvidia<digits> character devices. */
HIDDEN int fake_count_gpu_nodes(void);
/* RM version the kernel module reports in /proc/driver/nvidia/version; 0 on success. */
HIDDEN int fake_kernel_version(char *buf, size_t len);

#endif
