#include "common.h"

#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define GPUS_DIR "/proc/driver/nvidia/gpus"
#define LIBDIR "/usr/lib/x86_64-linux-gnu"

/* The driver tree this library belongs to: "" when it is loaded from /usr/lib/x86_64-linux-gnu
 * (in a container, or a host install), else the directory above its usr/lib/x86_64-linux-gnu
 * (a fake tree used in place, e.g. by a runtime that dlopens it on the host). */
static const char *root(void)
{
    static char prefix[4096];
    static int done;
    Dl_info info;
    if (done)
        return prefix;
    done = 1;
    if (!dladdr((void *)root, &info) || !info.dli_fname)
        return prefix;
    const char *slash = strrchr(info.dli_fname, '/');
    size_t dir_len = slash ? (size_t)(slash - info.dli_fname) : 0;
    size_t suffix = strlen(LIBDIR);
    if (dir_len > suffix && dir_len - suffix < sizeof prefix &&
        !strncmp(info.dli_fname + dir_len - suffix, LIBDIR, suffix))
        snprintf(prefix, sizeof prefix, "%.*s", (int)(dir_len - suffix), info.dli_fname);
    return prefix;
}

const char *fake_path(char *buf, size_t len, const char *path)
{
    snprintf(buf, len, "%s%s", root(), path);
    return buf;
}

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
    char path[4608], line[256];
    snprintf(path, sizeof path, "%s%s/%s/information", root(), GPUS_DIR, dir);
    memset(gpu, 0, sizeof *gpu);
    gpu->minor = -1;
    snprintf(gpu->bus_id, sizeof gpu->bus_id, "%.31s", dir);
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
    char path[4608];
    DIR *d = opendir(fake_path(path, sizeof path, GPUS_DIR));
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
    char full[4608];
    return stat(fake_path(full, sizeof full, path), &st) == 0 && S_ISCHR(st.st_mode);
}

int fake_count_gpu_nodes(void)
{
    char dev[4608];
    DIR *d = opendir(fake_path(dev, sizeof dev, "/dev"));
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
    char line[512], path[4608];
    FILE *f = fopen(fake_path(path, sizeof path, "/proc/driver/nvidia/version"), "r");
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
