/*
 * The floor of the GPU stage: the same device nodes and bind mounts as a GPU plan, made with
 * bare syscalls and nothing else, so the benchmark can show how far gpu-youki's GPU stage is
 * from what the kernel itself charges for that work.
 *
 *   floor OPS_FILE SCRATCH_DIR
 *
 * OPS_FILE has one operation a line (written by scripts/bench.d/bench.py from
 * `gpu-youki gpu plan --format json`):
 *   dev PATH MAJOR MINOR        a character device node at SCRATCH_DIR/dev/PATH
 *   file SOURCE TARGET          bind SOURCE (a file) onto SCRATCH_DIR/root/TARGET, ro,nosuid,nodev
 *   dir SOURCE TARGET           the same for a directory
 *
 * In a fresh mount namespace (unshare CLONE_NEWNS, / made rprivate) it mounts a tmpfs on
 * SCRATCH_DIR/dev and on SCRATCH_DIR/root, makes the nodes, creates each mount target and binds
 * the source onto it (a bind, then a read-only remount: two mount calls, as runtimes do).
 * Nothing outlives the process: its namespace and mounts go when it exits. It prints one JSON
 * line: {"ops": N, "mknod": N, "mounts": N, "ns_us": …, "work_us": …}, the microseconds spent
 * making the namespace and doing the work after it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#define MAX_OPS 4096

struct op {
    char kind[8];
    char a[PATH_MAX];
    char b[PATH_MAX];
    unsigned major, minor;
};

static struct op ops[MAX_OPS];

static void die(const char *what, const char *path)
{
    fprintf(stderr, "floor: %s %s: %s\n", what, path, strerror(errno));
    exit(1);
}

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

/* buf = a/b, failing rather than truncating. */
static void join(char *buf, size_t size, const char *a, const char *b)
{
    if ((size_t)snprintf(buf, size, "%s/%s", a, b) >= size) {
        fprintf(stderr, "floor: path too long: %s/%s\n", a, b);
        exit(1);
    }
}

/* mkdir -p of the directories above path (path itself is left alone). */
static void make_parents(char *path)
{
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(path, 0755) != 0 && errno != EEXIST)
            die("mkdir", path);
        *p = '/';
    }
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: floor OPS_FILE SCRATCH_DIR\n");
        return 2;
    }
    FILE *in = fopen(argv[1], "r");
    if (!in)
        die("open", argv[1]);
    int n = 0;
    char line[2 * PATH_MAX + 64];
    while (fgets(line, sizeof line, in)) {
        if (n == MAX_OPS) {
            fprintf(stderr, "floor: more than %d operations in %s\n", MAX_OPS, argv[1]);
            return 1;
        }
        struct op *op = &ops[n];
        if (sscanf(line, "dev %4095s %u %u", op->a, &op->major, &op->minor) == 3)
            strcpy(op->kind, "dev");
        else if (sscanf(line, "file %4095s %4095s", op->a, op->b) == 2)
            strcpy(op->kind, "file");
        else if (sscanf(line, "dir %4095s %4095s", op->a, op->b) == 2)
            strcpy(op->kind, "dir");
        else {
            fprintf(stderr, "floor: bad line in %s: %s", argv[1], line);
            return 1;
        }
        n++;
    }
    fclose(in);

    char dev[PATH_MAX], root[PATH_MAX], path[2 * PATH_MAX];
    join(dev, sizeof dev, argv[2], "dev");
    join(root, sizeof root, argv[2], "root");
    if ((mkdir(dev, 0755) != 0 && errno != EEXIST) || (mkdir(root, 0755) != 0 && errno != EEXIST))
        die("mkdir", argv[2]);

    double start = now_us();
    if (unshare(CLONE_NEWNS) != 0)
        die("unshare", "CLONE_NEWNS");
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
        die("make-rprivate", "/");
    double ns_done = now_us();
    if (mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=755") != 0)
        die("mount tmpfs", dev);
    if (mount("tmpfs", root, "tmpfs", MS_NOSUID, "mode=755") != 0)
        die("mount tmpfs", root);
    int nodes = 0, mounts = 0;
    for (int i = 0; i < n; i++) {
        struct op *op = &ops[i];
        if (strcmp(op->kind, "dev") == 0) {
            join(path, sizeof path, dev, op->a);
            make_parents(path);
            if (mknod(path, S_IFCHR | 0666, makedev(op->major, op->minor)) != 0)
                die("mknod", path);
            nodes++;
            continue;
        }
        join(path, sizeof path, root, op->b);
        make_parents(path);
        if (strcmp(op->kind, "dir") == 0) {
            if (mkdir(path, 0755) != 0 && errno != EEXIST)
                die("mkdir", path);
        } else {
            int fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
            if (fd < 0)
                die("create", path);
            close(fd);
        }
        if (mount(op->a, path, NULL, MS_BIND, NULL) != 0)
            die("bind", op->a);
        if (mount(NULL, path, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV,
                  NULL) != 0)
            die("remount read-only", path);
        mounts++;
    }
    double end = now_us();
    printf("{\"ops\": %d, \"mknod\": %d, \"mounts\": %d, \"ns_us\": %.1f, \"work_us\": %.1f}\n",
           n, nodes, mounts, ns_done - start, end - ns_done);
    return 0;
}
