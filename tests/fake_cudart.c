/* A stand-in for the CUDA runtime (libcudart) with the calls app/hardware/cudart.py makes:
 * "device" memory is malloc'd host memory and a host-to-device copy is a memcpy, so the copy
 * probe's ctypes calls run, and are timed, on a machine without a GPU. Built by
 * tests/test_h2d_probe.py (cc -shared -fPIC).
 *
 * FAKE_CUDART_LOG=path       appends each call's name to the file, one a line
 * FAKE_CUDART_DEVICES=n      how many devices cudaGetDeviceCount reports (default 1)
 * FAKE_CUDART_FAIL=name      that call returns cudaErrorMemoryAllocation (2)
 * FAKE_CUDART_CRASH=name     that call aborts the process, as a broken driver may
 * FAKE_CUDART_HANG=name      that call never returns, as a wedged driver may
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef int cudaError_t;

static cudaError_t called(const char *name) {
    const char *log = getenv("FAKE_CUDART_LOG");
    if (log) {
        FILE *f = fopen(log, "a");
        if (f) {
            fprintf(f, "%s\n", name);
            fclose(f);
        }
    }
    const char *crash = getenv("FAKE_CUDART_CRASH");
    if (crash && strcmp(crash, name) == 0)
        abort();
    const char *hang = getenv("FAKE_CUDART_HANG");
    while (hang && strcmp(hang, name) == 0)
        pause();
    const char *fail = getenv("FAKE_CUDART_FAIL");
    return fail && strcmp(fail, name) == 0 ? 2 : 0;
}

const char *cudaGetErrorString(cudaError_t error) {
    return error == 2 ? "out of memory" : "unknown error";
}

cudaError_t cudaGetDeviceCount(int *count) {
    const char *n = getenv("FAKE_CUDART_DEVICES");
    *count = n ? atoi(n) : 1;
    return called("cudaGetDeviceCount");
}

cudaError_t cudaSetDevice(int device) {
    (void) device;
    return called("cudaSetDevice");
}

cudaError_t cudaRuntimeGetVersion(int *version) {
    *version = 12080;
    return called("cudaRuntimeGetVersion");
}

cudaError_t cudaGetDeviceProperties_v2(void *prop, int device) {
    (void) device;
    strcpy((char *) prop, "Fake CUDA GPU");
    return called("cudaGetDeviceProperties_v2");
}

static cudaError_t allocate(void **ptr, size_t size, const char *name) {
    cudaError_t status = called(name);
    *ptr = status ? NULL : malloc(size);
    return status ? status : (*ptr ? 0 : 2);
}

cudaError_t cudaMalloc(void **ptr, size_t size) { return allocate(ptr, size, "cudaMalloc"); }

cudaError_t cudaHostAlloc(void **ptr, size_t size, unsigned int flags) {
    (void) flags;
    return allocate(ptr, size, "cudaHostAlloc");
}

cudaError_t cudaFree(void *ptr) {
    free(ptr);
    return called("cudaFree");
}

cudaError_t cudaFreeHost(void *ptr) {
    free(ptr);
    return called("cudaFreeHost");
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t count, int kind) {
    cudaError_t status = called(kind == 1 ? "cudaMemcpy(HostToDevice)" : "cudaMemcpy(other)");
    if (!status)
        memcpy(dst, src, count);
    return status;
}

cudaError_t cudaDeviceSynchronize(void) { return called("cudaDeviceSynchronize"); }
