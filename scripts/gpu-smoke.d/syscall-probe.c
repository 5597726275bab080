// gpu-smoke's kernel probe, built static by `scripts/gpu-smoke --prepare` so it runs on any
// x86_64 host: whether the syscalls gpu-youki's GPU stage relies on exist and are allowed.
//   openat2 (RESOLVE_IN_ROOT|RESOLVE_NO_MAGICLINKS)  Linux 5.6   all in-root path resolution
//   open_tree, move_mount                            Linux 5.2   mounting driver files in
//   fsopen, fsmount                                  Linux 5.2   the /proc/driver/nvidia tmpfs
//   mount_setattr                                    Linux 5.12  read-only/nosuid/nodev binds
// Prints `<name>=ok` or `<name>=unavailable (<errno>)` per call; exit 0 when all are present.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define NR_OPEN_TREE 428
#define NR_MOVE_MOUNT 429
#define NR_FSOPEN 430
#define NR_FSMOUNT 432
#define NR_OPENAT2 437
#define NR_MOUNT_SETATTR 442
#define RESOLVE_NO_MAGICLINKS 0x02
#define RESOLVE_IN_ROOT 0x10
#define OPEN_TREE_CLOEXEC O_CLOEXEC

struct open_how_v0 {
    uint64_t flags, mode, resolve;
};

static int report(const char *name, long rc) {
    // The probe passes arguments the kernel rejects (bad fds) where a real call would change
    // something: any error but ENOSYS/EPERM proves the call exists and is allowed.
    if (rc >= 0 || (errno != ENOSYS && errno != EPERM)) {
        printf("%s=ok\n", name);
        return 0;
    }
    printf("%s=unavailable (%s: %s)\n", name, errno == ENOSYS ? "ENOSYS" : "EPERM",
           errno == ENOSYS ? "kernel too old, or filtered by seccomp/a sandbox"
                           : "denied by seccomp or a missing capability");
    return 1;
}

int main(void) {
    int failed = 0;
    int root = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (root < 0) {
        printf("open(/)=%s\n", strerror(errno));
        return 2;
    }
    struct open_how_v0 how = {.flags = O_PATH | O_CLOEXEC,
                              .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS};
    long fd = syscall(NR_OPENAT2, root, ".", &how, sizeof how);
    failed |= report("openat2", fd);
    if (fd >= 0) close((int)fd);
    // Without OPEN_TREE_CLONE open_tree only returns an O_PATH fd: no mount is made.
    fd = syscall(NR_OPEN_TREE, root, ".", OPEN_TREE_CLOEXEC | 0x1000 /* AT_EMPTY_PATH */);
    failed |= report("open_tree", fd);
    if (fd >= 0) close((int)fd);
    // Bad file descriptors: nothing is moved or changed.
    failed |= report("move_mount", syscall(NR_MOVE_MOUNT, -1, "", -1, "", 0));
    failed |= report("mount_setattr", syscall(NR_MOUNT_SETATTR, -1, "", 0, NULL, 0));
    // A tmpfs context is created and dropped unmounted.
    fd = syscall(NR_FSOPEN, "tmpfs", 1 /* FSOPEN_CLOEXEC */);
    failed |= report("fsopen", fd);
    if (fd >= 0) close((int)fd);
    failed |= report("fsmount", syscall(NR_FSMOUNT, -1, 0, 0));
    return failed;
}
