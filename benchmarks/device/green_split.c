/* Streams on two disjoint sets of a GPU's SMs (CUDA green contexts), for the trial in
 * scoring/sm_split.py. Built on the GPU machine, whose cuda.h has the structures' exact layout:
 *
 *     nvcc -shared -Xcompiler -fPIC -o /tmp/libgreen_split.so benchmarks/device/green_split.c -lcuda
 *
 * bs_green_split(device, decode_sms, n_decode, decode_priority, engine_priority,
 *                decode_streams[n_decode], engine_streams[2], sm_counts[2], err, errlen)
 * puts `decode_sms` SMs (rounded up to the GPU's granularity) in one green context and the rest in
 * another, and creates n_decode non-blocking streams on the first and two on the second (at the given
 * priorities, brought into the GPU's range; the calling thread needs a current context). It returns
 * 0, or the CUresult of the call that failed with its name and message in err.
 */
#include <cuda.h>
#include <stdio.h>

static int failed(CUresult result, const char *call, char *err, int errlen) {
    const char *text = NULL;
    cuGetErrorString(result, &text);
    snprintf(err, (size_t) errlen, "%s: %s", call, text ? text : "unknown CUDA error");
    return (int) result;
}

#define CHECK(call)                                                          \
    do {                                                                     \
        CUresult result_ = (call);                                           \
        if (result_ != CUDA_SUCCESS) return failed(result_, #call, err, errlen); \
    } while (0)

int bs_green_split(int device, unsigned decode_sms, int n_decode, int decode_priority, int engine_priority,
                   unsigned long long *decode_streams, unsigned long long *engine_streams,
                   unsigned *sm_counts, char *err, int errlen) {
    CUdevice dev;
    CUdevResource all, decode, rest;
    CUdevResourceDesc desc;
    CUgreenCtx decode_ctx, engine_ctx;
    CUstream stream;
    unsigned groups = 1;

    CHECK(cuInit(0));
    CHECK(cuDeviceGet(&dev, device));
    int least, greatest;  /* lower runs first; a value out of range is brought to the nearest end */
    CHECK(cuCtxGetStreamPriorityRange(&least, &greatest));
    decode_priority = decode_priority < greatest ? greatest : decode_priority > least ? least : decode_priority;
    engine_priority = engine_priority < greatest ? greatest : engine_priority > least ? least : engine_priority;
    CHECK(cuDeviceGetDevResource(dev, &all, CU_DEV_RESOURCE_TYPE_SM));
    CHECK(cuDevSmResourceSplitByCount(&decode, &groups, &all, &rest, 0, decode_sms));
    CHECK(cuDevResourceGenerateDesc(&desc, &decode, 1));
    CHECK(cuGreenCtxCreate(&decode_ctx, desc, dev, CU_GREEN_CTX_DEFAULT_STREAM));
    CHECK(cuDevResourceGenerateDesc(&desc, &rest, 1));
    CHECK(cuGreenCtxCreate(&engine_ctx, desc, dev, CU_GREEN_CTX_DEFAULT_STREAM));
    /* Each as a CUcontext too: libraries (cuDNN) push the context of the stream they are given,
     * which fails for a green context never converted ("invalid device context"). */
    CUcontext as_context;
    CHECK(cuCtxFromGreenCtx(&as_context, decode_ctx));
    CHECK(cuCtxFromGreenCtx(&as_context, engine_ctx));
    for (int i = 0; i < n_decode; i++) {
        CHECK(cuGreenCtxStreamCreate(&stream, decode_ctx, CU_STREAM_NON_BLOCKING, decode_priority));
        decode_streams[i] = (unsigned long long) stream;
    }
    for (int i = 0; i < 2; i++) {
        CHECK(cuGreenCtxStreamCreate(&stream, engine_ctx, CU_STREAM_NON_BLOCKING, engine_priority));
        engine_streams[i] = (unsigned long long) stream;
    }
    sm_counts[0] = decode.sm.smCount;
    sm_counts[1] = rest.sm.smCount;
    return 0;
}
