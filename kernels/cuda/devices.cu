/* Emulated devices on one GPU: a stream per device (with a priority),
 * optionally inside a green context holding about the SM count its profile
 * asks for; a cuBLAS handle, scratch and a pair of timing events per device;
 * the expert call with real-time link delays and NVTX ranges.
 *
 * Green contexts (CUDA 12.4+ driver) are reached through driver entry points
 * fetched at run time (cudaGetDriverEntryPointByVersion), so nothing links
 * libcuda; where any step fails the device gets a plain stream and the log
 * says why. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <cuda.h>
#include <nvtx3/nvToolsExt.h>

#include "kernels/cuda/common.cuh"

/* the signatures of the headers we compile against (entry points are asked
   for in that ABI: get_entry) */
typedef decltype(&cuDeviceGet) pfn_device_get;
typedef decltype(&cuDeviceGetDevResource) pfn_get_dev_resource;
typedef decltype(&cuDevSmResourceSplitByCount) pfn_split_by_count;
typedef decltype(&cuDevResourceGenerateDesc) pfn_generate_desc;
typedef decltype(&cuGreenCtxCreate) pfn_green_create;
typedef decltype(&cuGreenCtxDestroy) pfn_green_destroy;
typedef decltype(&cuGreenCtxStreamCreate) pfn_green_stream;
typedef decltype(&cuCtxFromGreenCtx) pfn_ctx_from_green;
typedef decltype(&cuCtxPushCurrent) pfn_ctx_push;
typedef decltype(&cuCtxPopCurrent) pfn_ctx_pop;

typedef struct {
    pfn_device_get device_get;
    pfn_get_dev_resource get_dev_resource;
    pfn_split_by_count split_by_count;
    pfn_generate_desc generate_desc;
    pfn_green_create green_create;
    pfn_green_destroy green_destroy;
    pfn_green_stream green_stream;
    pfn_ctx_from_green ctx_from_green;
    pfn_ctx_push ctx_push;
    pfn_ctx_pop ctx_pop;
} green_api;

/* The entry point of sym in the ABI of the headers we were compiled with
   (CUDART_VERSION: some green-context symbols, cuGreenCtxStreamCreate among
   them, appeared after 12.4, so asking for the 12.4 ABI fails on them). */
static int get_entry(const char *sym, void **fn, const char **missing) {
    cudaDriverEntryPointQueryResult q;
    if (cudaGetDriverEntryPointByVersion(sym, fn, CUDART_VERSION, cudaEnableDefault, &q) !=
            cudaSuccess ||
        q != cudaDriverEntryPointSuccess || !*fn) {
        cudaGetLastError();
        if (!*missing) *missing = sym;
        return -1;
    }
    return 0;
}

static int green_api_load(green_api *g, const char **missing) {
    memset(g, 0, sizeof *g);
    *missing = NULL;
    int rc = 0;
    rc |= get_entry("cuDeviceGet", (void **)&g->device_get, missing);
    rc |= get_entry("cuDeviceGetDevResource", (void **)&g->get_dev_resource, missing);
    rc |= get_entry("cuDevSmResourceSplitByCount", (void **)&g->split_by_count, missing);
    rc |= get_entry("cuDevResourceGenerateDesc", (void **)&g->generate_desc, missing);
    rc |= get_entry("cuGreenCtxCreate", (void **)&g->green_create, missing);
    rc |= get_entry("cuGreenCtxDestroy", (void **)&g->green_destroy, missing);
    rc |= get_entry("cuGreenCtxStreamCreate", (void **)&g->green_stream, missing);
    rc |= get_entry("cuCtxFromGreenCtx", (void **)&g->ctx_from_green, missing);
    rc |= get_entry("cuCtxPushCurrent", (void **)&g->ctx_push, missing);
    rc |= get_entry("cuCtxPopCurrent", (void **)&g->ctx_pop, missing);
    return rc ? -1 : 0;
}

typedef struct {
    cudaStream_t s;
    CUgreenCtx green; /* NULL: plain stream */
    CUcontext green_cu;
    int sm_count;     /* SMs of the green context (0: all) */
    wd_cuda_blas *blas;
    void *scratch;
    cudaEvent_t ev0, ev1;
    cudaEvent_t done; /* no timing: joins (created in the stream's context) */
    int recorded;
} wd_dev;

struct wd_cuda_devset {
    int n;
    int gpu;
    int *ids; /* names in logs and NVTX ranges */
    green_api api;
    int have_api;
    wd_dev *dev;
};

void wd_cuda_log(char *log, size_t len, const char *fmt, ...) {
    if (!log || !len) return;
    size_t used = strnlen(log, len);
    if (used + 1 >= len) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(log + used, len - used, fmt, ap);
    va_end(ap);
}

/* A green context holding `want` SMs (rounded up to the GPU's SM group
 * granularity) split off *pool, and a stream in it; *pool becomes what is left,
 * so the partitions of a devset never overlap. 0 on success; 1 when the pool
 * holds too few SMs (a request to refuse, not a driver failure); -1 when a
 * driver step failed. */
static int make_green(wd_cuda_devset *ds, wd_dev *d, CUdevice dev, CUdevResource *pool, int want,
                      int priority, char *why, size_t wlen) {
    green_api *a = &ds->api;
    CUdevResource part, rest;
    CUdevResourceDesc desc;
    unsigned int groups = 1;
    if ((unsigned)want > pool->sm.smCount) {
        snprintf(why, wlen, "asks for %d SMs, %u left", want, pool->sm.smCount);
        return 1;
    }
    memset(&part, 0, sizeof part);
    memset(&rest, 0, sizeof rest);
    if (a->split_by_count(&part, &groups, pool, &rest, 0, (unsigned)want) != CUDA_SUCCESS ||
        groups < 1) {
        /* the rounded-up group does not fit in what is left */
        snprintf(why, wlen, "asks for %d SMs, %u left (SM groups are rounded up)", want,
                 pool->sm.smCount);
        return 1;
    }
    if (a->generate_desc(&desc, &part, 1) != CUDA_SUCCESS) {
        snprintf(why, wlen, "cuDevResourceGenerateDesc failed");
        return -1;
    }
    if (a->green_create(&d->green, desc, dev, CU_GREEN_CTX_DEFAULT_STREAM) != CUDA_SUCCESS) {
        d->green = NULL;
        snprintf(why, wlen, "cuGreenCtxCreate failed");
        return -1;
    }
    CUstream cs;
    if (a->green_stream(&cs, d->green, CU_STREAM_NON_BLOCKING, priority) != CUDA_SUCCESS) {
        a->green_destroy(d->green);
        d->green = NULL;
        snprintf(why, wlen, "cuGreenCtxStreamCreate failed");
        return -1;
    }
    if (a->ctx_from_green(&d->green_cu, d->green) != CUDA_SUCCESS) {
        cudaStreamDestroy((cudaStream_t)cs);
        a->green_destroy(d->green);
        d->green = NULL;
        snprintf(why, wlen, "cuCtxFromGreenCtx failed");
        return -1;
    }
    d->s = (cudaStream_t)cs;
    d->sm_count = (int)part.sm.smCount;
    *pool = rest;
    return 0;
}

extern "C" wd_cuda_devset *wd_cuda_devset_create(const wd_cuda_devset_spec *spec, char *log,
                                                 size_t loglen, char *err, size_t errlen) {
    if (spec->n_devices <= 0) {
        snprintf(err, errlen, "cuda: n_devices must be positive");
        return NULL;
    }
    if (cudaSetDevice(spec->gpu) != cudaSuccess) {
        cudaGetLastError();
        snprintf(err, errlen, "cuda: no CUDA device %d", spec->gpu);
        return NULL;
    }
    wd_cuda_devset *ds = (wd_cuda_devset *)calloc(1, sizeof *ds);
    if (!ds || !(ds->dev = (wd_dev *)calloc((size_t)spec->n_devices, sizeof(wd_dev)))) {
        free(ds);
        snprintf(err, errlen, "cuda: out of host memory");
        return NULL;
    }
    ds->n = spec->n_devices;
    ds->gpu = spec->gpu;
    if (!(ds->ids = (int *)malloc((size_t)ds->n * sizeof(int)))) {
        free(ds->dev);
        free(ds);
        snprintf(err, errlen, "cuda: out of host memory");
        return NULL;
    }
    for (int d = 0; d < ds->n; d++) ds->ids[d] = spec->ids ? spec->ids[d] : d;
    long want_green = 0;
    for (int d = 0; spec->sm_count && d < ds->n; d++)
        if (spec->sm_count[d] > 0) want_green += spec->sm_count[d];
    /* green contexts: the GPU's SM resource is split once, request by request,
       each from what the earlier ones left, so partitions are disjoint */
    CUdevice cudev = 0;
    CUdevResource pool;
    memset(&pool, 0, sizeof pool);
    if (want_green) {
        const char *missing = NULL;
        ds->have_api = green_api_load(&ds->api, &missing) == 0 &&
                       ds->api.device_get(&cudev, ds->gpu) == CUDA_SUCCESS &&
                       ds->api.get_dev_resource(cudev, &pool, CU_DEV_RESOURCE_TYPE_SM) ==
                           CUDA_SUCCESS;
        if (!ds->have_api)
            wd_cuda_log(log, loglen,
                        "cuda: green contexts unavailable (%s%s): plain streams for every "
                        "device\n",
                        missing ? "no driver entry point " : "cannot read the GPU's SM resource",
                        missing ? missing : "");
        else if (want_green > (long)pool.sm.smCount) {
            snprintf(err, errlen,
                     "the devices ask for %ld SMs in all (profile \"gpu_sms\"), GPU %d has %u: "
                     "lower gpu_sms",
                     want_green, ds->gpu, pool.sm.smCount);
            wd_cuda_devset_free(ds);
            return NULL;
        }
    }
    int lo = 0, hi = 0;
    cudaDeviceGetStreamPriorityRange(&lo, &hi); /* lo: least priority (0), hi: greatest */
    size_t max_tok = spec->max_tokens ? spec->max_tokens : 1;
    size_t scratch = wd_cuda_expert_scratch_bytes((int)max_tok, spec->hidden > 0 ? spec->hidden : 1,
                                                  spec->ffn > 0 ? spec->ffn : 1);
    for (int d = 0; d < ds->n; d++) {
        wd_dev *v = &ds->dev[d];
        int prio = spec->priority ? spec->priority[d] : 0;
        if (prio < hi) prio = hi;
        if (prio > lo) prio = lo;
        int want = spec->sm_count ? spec->sm_count[d] : 0;
        char why[160] = "";
        int grc = want > 0 && ds->have_api
                      ? make_green(ds, v, cudev, &pool, want, prio, why, sizeof why)
                      : -1;
        if (grc == 1) {
            snprintf(err, errlen, "device %d: green context %s: lower gpu_sms", ds->ids[d], why);
            wd_cuda_devset_free(ds);
            return NULL;
        }
        if (grc == 0) {
            wd_cuda_log(log, loglen, "cuda: device %d: green context with %d SMs (asked %d)\n",
                        ds->ids[d], v->sm_count, want);
        } else {
            if (want > 0 && ds->have_api)
                wd_cuda_log(log, loglen, "cuda: device %d: plain stream (%s)\n", ds->ids[d], why);
            if (cudaStreamCreateWithPriority(&v->s, cudaStreamNonBlocking, prio) != cudaSuccess) {
                cudaGetLastError();
                snprintf(err, errlen, "cuda: cannot create stream %d", ds->ids[d]);
                wd_cuda_devset_free(ds);
                return NULL;
            }
        }
        /* events and the cuBLAS handle live in the stream's context */
        if (v->green) ds->api.ctx_push(v->green_cu);
        int ok = cudaEventCreate(&v->ev0) == cudaSuccess && cudaEventCreate(&v->ev1) == cudaSuccess &&
                 cudaEventCreateWithFlags(&v->done, cudaEventDisableTiming) == cudaSuccess;
        if (ok) {
            char berr[256];
            v->blas = wd_cuda_blas_create(v->s, max_tok * (size_t)(spec->ffn > spec->hidden
                                                                       ? spec->ffn
                                                                       : spec->hidden),
                                          berr, sizeof berr);
            ok = v->blas != NULL;
        }
        if (v->green) {
            CUcontext dummy;
            ds->api.ctx_pop(&dummy);
        }
        if (ok) ok = cudaMalloc(&v->scratch, scratch) == cudaSuccess;
        if (!ok) {
            cudaGetLastError();
            snprintf(err, errlen,
                     "cuda: cannot create events/cuBLAS/scratch of device %d",
                     ds->ids[d]);
            wd_cuda_devset_free(ds);
            return NULL;
        }
    }
    return ds;
}

extern "C" void wd_cuda_devset_free(wd_cuda_devset *ds) {
    if (!ds) return;
    for (int d = 0; ds->dev && d < ds->n; d++) {
        wd_dev *v = &ds->dev[d];
        if (v->s) cudaStreamSynchronize(v->s);
        wd_cuda_blas_free(v->blas);
        if (v->scratch) cudaFree(v->scratch);
        if (v->ev0) cudaEventDestroy(v->ev0);
        if (v->ev1) cudaEventDestroy(v->ev1);
        if (v->done) cudaEventDestroy(v->done);
        /* a stream made by cuGreenCtxStreamCreate is not destroyed with its
           green context: destroy it first */
        if (v->s) cudaStreamDestroy(v->s);
        if (v->green) ds->api.green_destroy(v->green);
    }
    free(ds->dev);
    free(ds->ids);
    free(ds);
}

extern "C" int wd_cuda_devset_size(const wd_cuda_devset *ds) { return ds->n; }
extern "C" wd_cuda_stream_t wd_cuda_devset_stream(const wd_cuda_devset *ds, int d) {
    return ds->dev[d].s;
}
extern "C" wd_cuda_blas *wd_cuda_devset_blas(const wd_cuda_devset *ds, int d) {
    return ds->dev[d].blas;
}
extern "C" void *wd_cuda_devset_scratch(const wd_cuda_devset *ds, int d) {
    return ds->dev[d].scratch;
}
cudaEvent_t wd_cuda_devset_done_event(const wd_cuda_devset *ds, int d) { return ds->dev[d].done; }
extern "C" int wd_cuda_devset_green(const wd_cuda_devset *ds, int d) {
    return ds->dev[d].green != NULL;
}
extern "C" int wd_cuda_devset_sm_count(const wd_cuda_devset *ds, int d) {
    return ds->dev[d].green ? ds->dev[d].sm_count : 0;
}

/* ---- which SMs a stream's kernels reach (partition checks) ---------------------- */
__global__ void sms_used_kernel(uint32_t *bitmap) {
    unsigned smid;
    asm volatile("mov.u32 %0, %%smid;" : "=r"(smid));
    if (threadIdx.x == 0 && smid < 256) atomicOr(&bitmap[smid / 32], 1u << (smid % 32));
    /* stay resident a while so the blocks spread over every SM the stream may use */
    unsigned long long t0 = wd_globaltimer();
    while (wd_globaltimer() - t0 < 20000ull) __nanosleep(500);
}

extern "C" int wd_cuda_devset_sms_used(wd_cuda_devset *ds, int d, int blocks, uint32_t *bitmap) {
    if (d < 0 || d >= ds->n || blocks <= 0) return (int)cudaErrorInvalidValue;
    wd_dev *v = &ds->dev[d];
    uint32_t *dmap = NULL;
    WD_CU(cudaMalloc(&dmap, 8 * sizeof(uint32_t)));
    cudaError_t e = cudaMemsetAsync(dmap, 0, 8 * sizeof(uint32_t), v->s);
    if (e == cudaSuccess) {
        sms_used_kernel<<<blocks, 32, 0, v->s>>>(dmap);
        e = cudaGetLastError();
    }
    if (e == cudaSuccess)
        e = cudaMemcpyAsync(bitmap, dmap, 8 * sizeof(uint32_t), cudaMemcpyDeviceToHost, v->s);
    if (e == cudaSuccess) e = cudaStreamSynchronize(v->s);
    cudaFree(dmap);
    return (int)e;
}

extern "C" void wd_cuda_nvtx_push(const char *name) { nvtxRangePushA(name); }
extern "C" void wd_cuda_nvtx_pop(void) { nvtxRangePop(); }

static int link_delay(wd_cuda_link_delay dly, cudaStream_t s) {
    return dly.d_ns ? wd_cuda_delay_at(dly.d_ns, s) : wd_cuda_delay(dly.ns, s);
}

int wd_cuda_devset_expert_call_at(wd_cuda_devset *ds, int d, int layer, const wd_cuda_expert *e,
                                  float *d_out, const float *d_x, const int *d_rows,
                                  const float *d_scale, int n, int accumulate,
                                  wd_cuda_link_delay down, wd_cuda_link_delay up, int timing) {
    if (d < 0 || d >= ds->n) return (int)cudaErrorInvalidValue;
    wd_dev *v = &ds->dev[d];
    int id = ds->ids[d];
    char name[64];
    int rc = 0;
    if (down.ns || down.d_ns) {
        snprintf(name, sizeof name, "L%d/dev%d/downlink", layer, id);
        nvtxRangePushA(name);
        rc = link_delay(down, v->s);
        nvtxRangePop();
        if (rc) return rc;
    }
    snprintf(name, sizeof name, "L%d/dev%d/expert", layer, id);
    nvtxRangePushA(name);
    /* inside a stream capture the timing records are external ones, so they
       become event nodes of the graph (CUDA-graph decode is timed too); the
       flag is invalid outside a capture (cudaErrorIllegalState) */
    unsigned rec = cudaEventRecordDefault;
    if (timing) {
        cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
        rc = (int)cudaStreamIsCapturing(v->s, &cs);
        if (rc) return rc;
        if (cs == cudaStreamCaptureStatusActive) rec = cudaEventRecordExternal;
    }
    if (timing & WD_TIME_START) rc = (int)cudaEventRecordWithFlags(v->ev0, v->s, rec);
    if (!rc) rc = wd_cuda_expert_ffn(v->blas, e, d_out, d_x, d_rows, d_scale, n, accumulate,
                                     v->scratch, v->s);
    if (!rc && (timing & WD_TIME_END)) rc = (int)cudaEventRecordWithFlags(v->ev1, v->s, rec);
    nvtxRangePop();
    if (rc) return rc;
    if (timing & WD_TIME_END) v->recorded = 1;
    if (up.ns || up.d_ns) {
        snprintf(name, sizeof name, "L%d/dev%d/uplink", layer, id);
        nvtxRangePushA(name);
        rc = link_delay(up, v->s);
        nvtxRangePop();
    }
    return rc;
}

extern "C" int wd_cuda_devset_expert_call(wd_cuda_devset *ds, int d, int layer,
                                          const wd_cuda_expert *e, float *d_out,
                                          const float *d_x, const int *d_rows,
                                          const float *d_scale, int n, int accumulate,
                                          uint64_t dl_ns, uint64_t ul_ns) {
    wd_cuda_link_delay down = {dl_ns, NULL}, up = {ul_ns, NULL};
    return wd_cuda_devset_expert_call_at(ds, d, layer, e, d_out, d_x, d_rows, d_scale, n,
                                         accumulate, down, up, WD_TIME_START | WD_TIME_END);
}

extern "C" double wd_cuda_devset_last_expert_seconds(wd_cuda_devset *ds, int d) {
    wd_dev *v = &ds->dev[d];
    if (!v->recorded) return -1.0;
    float ms = 0;
    if (cudaEventSynchronize(v->ev1) != cudaSuccess ||
        cudaEventElapsedTime(&ms, v->ev0, v->ev1) != cudaSuccess) {
        cudaGetLastError();
        return -1.0;
    }
    return ms * 1e-3;
}

/* ---- streams ---------------------------------------------------------------------- */
extern "C" int wd_cuda_stream_wait(wd_cuda_stream_t waiter, wd_cuda_stream_t signaler) {
    cudaEvent_t ev;
    WD_CU(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
    cudaError_t e = cudaEventRecord(ev, signaler);
    if (e == cudaSuccess) e = cudaStreamWaitEvent(waiter, ev, 0);
    cudaEventDestroy(ev); /* released once the wait completes */
    return (int)e;
}

extern "C" int wd_cuda_stream_create(wd_cuda_stream_t *s, int priority) {
    cudaStream_t st;
    WD_CU(cudaStreamCreateWithPriority(&st, cudaStreamNonBlocking, priority));
    *s = st;
    return 0;
}

extern "C" void wd_cuda_stream_destroy(wd_cuda_stream_t s) {
    if (s) cudaStreamDestroy(s);
}

extern "C" int wd_cuda_stream_sync(wd_cuda_stream_t s) { return (int)cudaStreamSynchronize(s); }
