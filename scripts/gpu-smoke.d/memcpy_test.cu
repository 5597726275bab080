// gpu-smoke's CUDA check, compiled with nvcc on the GPU host at run time (scripts/gpu-smoke):
// a host -> device -> device -> host memcpy round trip of 1 MiB and a vector add, verified on
// the host. Prints one `key=value` line per step; exit 0 when everything matched, 1 otherwise.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cuda_runtime.h>

#define CHECK(call)                                                                     \
    do {                                                                                \
        cudaError_t err_ = (call);                                                      \
        if (err_ != cudaSuccess) {                                                      \
            printf("error=%s: %s (%s)\n", #call, cudaGetErrorName(err_),                \
                   cudaGetErrorString(err_));                                           \
            return 1;                                                                   \
        }                                                                               \
    } while (0)

__global__ void vector_add(const float *a, const float *b, float *c, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) c[i] = a[i] + b[i];
}

int main() {
    int driver = 0, runtime = 0, count = 0;
    CHECK(cudaDriverGetVersion(&driver));
    CHECK(cudaRuntimeGetVersion(&runtime));
    CHECK(cudaGetDeviceCount(&count));
    printf("driver_version=%d runtime_version=%d device_count=%d\n", driver, runtime, count);
    cudaDeviceProp prop;
    CHECK(cudaGetDeviceProperties(&prop, 0));
    printf("device0=%s sm_%d%d\n", prop.name, prop.major, prop.minor);

    const int n = 1 << 18;  // 1 MiB of floats
    const size_t bytes = n * sizeof(float);
    float *a = (float *)malloc(bytes), *b = (float *)malloc(bytes), *c = (float *)malloc(bytes);
    float *back = (float *)malloc(bytes);
    for (int i = 0; i < n; i++) {
        a[i] = (float)i;
        b[i] = (float)(2 * i + 1);
    }
    float *da, *db, *dc;
    CHECK(cudaMalloc(&da, bytes));
    CHECK(cudaMalloc(&db, bytes));
    CHECK(cudaMalloc(&dc, bytes));

    // Round trip: host a -> device da -> device dc -> host back.
    CHECK(cudaMemcpy(da, a, bytes, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(dc, da, bytes, cudaMemcpyDeviceToDevice));
    CHECK(cudaMemcpy(back, dc, bytes, cudaMemcpyDeviceToHost));
    int ok_copy = memcmp(a, back, bytes) == 0;
    printf("memcpy_roundtrip=%s\n", ok_copy ? "ok" : "MISMATCH");

    CHECK(cudaMemcpy(db, b, bytes, cudaMemcpyHostToDevice));
    vector_add<<<(n + 255) / 256, 256>>>(da, db, dc, n);
    CHECK(cudaGetLastError());
    CHECK(cudaDeviceSynchronize());
    CHECK(cudaMemcpy(c, dc, bytes, cudaMemcpyDeviceToHost));
    int bad = 0;
    for (int i = 0; i < n; i++) {
        if (c[i] != a[i] + b[i]) bad++;
    }
    printf("vector_add=%s (%d of %d wrong)\n", bad ? "MISMATCH" : "ok", bad, n);

    CHECK(cudaFree(da));
    CHECK(cudaFree(db));
    CHECK(cudaFree(dc));
    free(a);
    free(b);
    free(c);
    free(back);
    return ok_copy && !bad ? 0 : 1;
}
