/* The fake driver's other binaries (nvidia-debugdump, nvidia-persistenced, nv-fabricmanager,
 * nvidia-cuda-mps-control, nvidia-cuda-mps-server): each prints its name and the driver
 * version and exits 0. Built with -DFAKE_TOOL="<name>" -DFAKE_RM_VERSION="580.95.05". */
#include <stdio.h>

int main(void)
{
    printf("%s: version %s (gpu-youki fake driver)\n", FAKE_TOOL, FAKE_RM_VERSION);
    return 0;
}
