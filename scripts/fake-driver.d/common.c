#include "common.h"

#include <ctype.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define GPUS_DIR "/proc/driver/nvidia/gpus"

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *end = s + strlen(s);
    while (end > s && isspace((unsigned char)end[-1]))
        *--end = '\0';
    return s;
}

/* "Key: \t value" lines, split at the first colon (bus ids contain colons). */
static void read_information(const char *dir, struct fake_gpu *gpu)
{
    char path[512], line[256];
    snprintf(path, sizeof path, "%s/%s/information", GPUS_DIR, dir);
    memset(gpu, 0, sizeof *gpu);
    gpu->minor = -1;
    snprintf(gpu->bus_id, sizeof gpu->bus_id, "%s", dir);
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    while (fgets(line, sizeof line, f)) {
        char *colon = strchr(line, ':');
        if (!colon)
            continue;
        *colon = '\0';
        char *key = trim(line), *value = trim(colon + 1);
        if (!strcmp(key, "Model"))
            snprintf(gpu->model, sizeof gpu->model, "%s", value);
        else if (!strcmp(key, "GPU UUID"))
            snprintf(gpu->uuid, sizeof gpu->uuid, "%s", value);
        else if (!strcmp(key, "Bus Location"))
            snprintf(gpu->bus_id, sizeof gpu->bus_id, "%s", value);
        else if (!strcmp(key, "Device Minor"))
            gpu->minor = atoi(value);
    }
    fclose(f);
}

static int by_bus_id(const void *a, const void *b)
{
    return strcmp(((const struct fake_gpu *)a)->bus_id, ((const struct fake_gpu *)b)->bus_id);
}

int fake_read_gpus(struct fake_gpu *gpus, int max)
{
    DIR *d = opendir(GPUS_DIR);
    if (!d)
        return 0;
    int n = 0;
    struct dirent *e;
    while (n < max && (e = readdir(d)))
        if (e->d_name[0] != '.')
            read_information(e->d_name, &gpus[n++]);
    closedir(d);
    qsort(gpus, n, sizeof *gpus, by_bus_id);
    return n;
}

int fake_is_char_device(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISCHR(st.st_mode);
}

int fake_count_gpu_nodes(void)
{
    DIR *d = opendir("/dev");
    if (!d)
        return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *digits = e->d_name + 6;
        if (strncmp(e->d_name, "nvidia", 6) || !*digits || strspn(digits, "0123456789") != strlen(digits))
            continue;
        char path[300];
        snprintf(path, sizeof path, "/dev/%s", e->d_name);
        n += fake_is_char_device(path);
    }
    closedir(d);
    return n;
}

/* "NVRM version: NVIDIA UNIX [Open Kernel Module for ]x86_64 Kernel Module  <RM>  <date>":
 * the first token starting with a digit after "Kernel Module". */
int fake_kernel_version(char *buf, size_t len)
{
    char line[512];
    FILE *f = fopen("/proc/driver/nvidia/version", "r");
    if (!f)
        return -1;
    char *got = fgets(line, sizeof line, f);
    fclose(f);
    char *p = got ? strstr(line, "Kernel Module") : NULL;
    if (!p)
        return -1;
    for (char *tok = strtok(p + strlen("Kernel Module"), " \t\n"); tok; tok = strtok(NULL, " \t\n"))
        if (isdigit((unsigned char)tok[0])) {
            snprintf(buf, len, "%s", tok);
            return 0;
        }
    return -1;
}
