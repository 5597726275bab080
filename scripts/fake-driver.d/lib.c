/* The one source every fake driver library is built from (scripts/fake-driver compiles it once
 * per library with -DFAKE_SONAME="<soname>"); libcuda and libnvidia-ml also link cuda.c /
 * nvml.c. The marker tells a test which file the dynamic loader really opened; a real driver
 * library has no such symbol. */
const char *gpu_youki_fake_marker(void)
{
    return FAKE_SONAME;
}
