/* Trial (issue #5, session 23, calls 2-3): give the CUDA streams that nvJPEG creates for itself a
 * priority of our choosing. What landed does the same from Python, with no compiler and no preload:
 * scoring/nvjpeg_streams.py. This shim stays for A/B runs of processes we do not start ourselves.
 *
 * nvJPEG's hardware backend converts each decoded image with a small kernel on streams of its own
 * (seven on an H100), created at the default priority, which is the engine's: beside the model
 * those kernels queue behind the model's thread blocks, and a decode call waits for all of them.
 * nvJPEG takes no streams from its caller, so this shim reaches them from below: libnvjpeg links
 * the CUDA runtime statically, and that runtime finds the driver's functions with dlsym() and
 * cuGetProcAddress(). Preloaded, the shim answers libnvjpeg's dlsym() calls (and only its own) so
 * that cuStreamCreate and cuStreamCreateWithPriority come back wrapped, creating every stream at
 * $NVJPEG_STREAM_PRIORITY (default: the greatest the context allows).
 *
 *   gcc -O2 -shared -fPIC benchmarks/device/nvjpeg_stream_priority.c -o /tmp/nsp.so -ldl
 *   LD_PRELOAD=/tmp/nsp.so NVJPEG_STREAM_PRIORITY_LOG=1 python3 ...
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int CUresult;
typedef void *CUstream;
typedef CUresult (*get_proc_v1_t)(const char *, void **, int, unsigned long long);
typedef CUresult (*get_proc_v2_t)(const char *, void **, int, unsigned long long, void *);
typedef CUresult (*stream_create_t)(CUstream *, unsigned int);
typedef CUresult (*stream_create_prio_t)(CUstream *, unsigned int, int);
typedef CUresult (*prio_range_t)(int *, int *);

static void *(*real_dlsym)(void *, const char *);
static get_proc_v1_t real_get_proc_v1;
static get_proc_v2_t real_get_proc_v2;
static stream_create_t real_create;
static stream_create_prio_t real_create_prio;
static prio_range_t real_prio_range;
static int streams_made;

static int logging(void) { return getenv("NVJPEG_STREAM_PRIORITY_LOG") != NULL; }

static int wanted_priority(void) {
    const char *value = getenv("NVJPEG_STREAM_PRIORITY");
    if (value && *value) return atoi(value);
    int least = 0, greatest = 0;
    if (real_prio_range && real_prio_range(&least, &greatest) == 0) return greatest;
    return 0;
}

static CUresult made(CUresult status, int priority, const char *how) {
    streams_made++;
    if (logging())
        fprintf(stderr, "nvjpeg_stream_priority: %s -> priority %d (status %d, stream %d)\n", how, priority,
                status, streams_made);
    return status;
}

static CUresult wrapped_create(CUstream *stream, unsigned int flags) {
    if (!real_create_prio) return made(real_create(stream, flags), 0, "cuStreamCreate (not wrapped)");
    int priority = wanted_priority();
    return made(real_create_prio(stream, flags, priority), priority, "cuStreamCreate");
}

static CUresult wrapped_create_prio(CUstream *stream, unsigned int flags, int priority) {
    (void)priority;
    int wanted = wanted_priority();
    return made(real_create_prio(stream, flags, wanted), wanted, "cuStreamCreateWithPriority");
}

/* What the driver gave for `symbol`, swapped for our wrapper where we wrap it. */
static void swap(const char *symbol, void **function);

static CUresult wrapped_get_proc_v1(const char *symbol, void **function, int version, unsigned long long flags) {
    CUresult status = real_get_proc_v1(symbol, function, version, flags);
    if (status == 0) swap(symbol, function);
    return status;
}

static CUresult wrapped_get_proc_v2(const char *symbol, void **function, int version, unsigned long long flags,
                                    void *found) {
    CUresult status = real_get_proc_v2(symbol, function, version, flags, found);
    if (status == 0) swap(symbol, function);
    return status;
}

static void swap(const char *symbol, void **function) {
    if (!function || !*function) return;
    if (!strcmp(symbol, "cuStreamCreate")) {
        real_create = (stream_create_t)*function;
        *function = (void *)wrapped_create;
    } else if (!strcmp(symbol, "cuStreamCreateWithPriority")) {
        real_create_prio = (stream_create_prio_t)*function;
        *function = (void *)wrapped_create_prio;
    } else if (!strcmp(symbol, "cuCtxGetStreamPriorityRange")) {
        real_prio_range = (prio_range_t)*function;
    } else if (!strcmp(symbol, "cuGetProcAddress")) {
        if (!real_get_proc_v2) real_get_proc_v2 = (get_proc_v2_t)*function;  /* v2's signature in CUDA >= 12 */
        *function = (void *)wrapped_get_proc_v2;
    }
}

static int called_from_nvjpeg(void *address) {
    Dl_info info;
    return dladdr(address, &info) && info.dli_fname && strstr(info.dli_fname, "libnvjpeg");
}

void *dlsym(void *handle, const char *symbol) {
    if (!real_dlsym) real_dlsym = (void *(*)(void *, const char *))dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.2.5");
    void *function = real_dlsym(handle, symbol);
    if (!function || !called_from_nvjpeg(__builtin_return_address(0))) return function;
    if (!real_create_prio) real_create_prio = (stream_create_prio_t)real_dlsym(handle, "cuStreamCreateWithPriority");
    if (!real_prio_range) real_prio_range = (prio_range_t)real_dlsym(handle, "cuCtxGetStreamPriorityRange");
    if (!strcmp(symbol, "cuGetProcAddress_v2")) {
        real_get_proc_v2 = (get_proc_v2_t)function;
        return (void *)wrapped_get_proc_v2;
    }
    if (!strcmp(symbol, "cuGetProcAddress")) {
        real_get_proc_v1 = (get_proc_v1_t)function;
        return (void *)wrapped_get_proc_v1;
    }
    swap(symbol, &function);
    return function;
}
