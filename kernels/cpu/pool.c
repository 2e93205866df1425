/* A fixed thread pool built for many short runs (a decode step makes a few
 * hundred wd_pool_run calls of 20-500 us each).
 *
 * wd_pool_run publishes (fn, ctx, n_tasks), bumps a generation counter and
 * works on tasks itself; task indices are handed out with an atomic counter.
 * Workers spin on the generation counter for a while after each run (so the
 * next run starts them in well under a microsecond) and only then sleep on a
 * condition variable; the caller signals it only when some worker sleeps.
 * The sleep hand-off is a Dekker pair on seq_cst atomics: a worker bumps
 * `sleepers` and re-reads `gen` under the mutex before waiting; the caller
 * bumps `gen` and then reads `sleepers`, so one of them sees the other. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kernels/cpu/simd.h"
#include "kernels/kernels.h"

/* How long an idle worker spins before it sleeps. */
#define WD_POOL_SPIN_NS 300000L

struct wd_pool {
    _Alignas(64) atomic_uint gen;   /* bumped by each run */
    _Alignas(64) atomic_int next;   /* next task index */
    _Alignas(64) atomic_int done;   /* workers finished with this generation */
    _Alignas(64) atomic_int sleepers;
    atomic_int stop;
    wd_task_fn fn;
    void *ctx;
    int n_tasks;
    int n_threads; /* including the caller */
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

static long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

static void drain(wd_pool *p) {
    wd_task_fn fn = p->fn;
    void *ctx = p->ctx;
    int n = p->n_tasks;
    for (;;) {
        int t = atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed);
        if (t >= n) break;
        fn(ctx, t, n);
    }
}

static void *worker(void *arg) {
    wd_pool *p = arg;
    unsigned seen = 0; /* gen is 0 when the pool is created */
    for (;;) {
        unsigned g = atomic_load_explicit(&p->gen, memory_order_acquire);
        if (g == seen) {
            long t0 = now_ns();
            for (int i = 1;; i++) {
                WD_CPU_RELAX();
                g = atomic_load_explicit(&p->gen, memory_order_acquire);
                if (g != seen) break;
                if ((i & 63) == 0 && now_ns() - t0 > WD_POOL_SPIN_NS) break;
            }
        }
        if (g == seen) {
            pthread_mutex_lock(&p->mu);
            atomic_fetch_add(&p->sleepers, 1);
            while ((g = atomic_load(&p->gen)) == seen) pthread_cond_wait(&p->cv, &p->mu);
            atomic_fetch_sub(&p->sleepers, 1);
            pthread_mutex_unlock(&p->mu);
        }
        seen = g;
        if (atomic_load_explicit(&p->stop, memory_order_acquire)) break;
        drain(p);
        atomic_fetch_add_explicit(&p->done, 1, memory_order_release);
    }
    return NULL;
}

wd_pool *wd_pool_create(int n_threads) {
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (int)n : 1;
    }
    size_t sz = (sizeof(wd_pool) + 63) / 64 * 64;
    wd_pool *p = aligned_alloc(64, sz);
    if (!p) return NULL;
    memset(p, 0, sz);
    atomic_init(&p->gen, 0);
    atomic_init(&p->next, 0);
    atomic_init(&p->done, 0);
    atomic_init(&p->sleepers, 0);
    atomic_init(&p->stop, 0);
    p->n_threads = 1;
    if (pthread_mutex_init(&p->mu, NULL) != 0) {
        free(p);
        return NULL;
    }
    if (pthread_cond_init(&p->cv, NULL) != 0) {
        pthread_mutex_destroy(&p->mu);
        free(p);
        return NULL;
    }
    if (n_threads > 1) {
        p->threads = calloc((size_t)n_threads - 1, sizeof(pthread_t));
        if (!p->threads) {
            wd_pool_destroy(p);
            return NULL;
        }
        pthread_attr_t attr;
        int have_attr = pthread_attr_init(&attr) == 0;
        /* the GEMM keeps ~200 KB of packed panels on the stack */
        if (have_attr) pthread_attr_setstacksize(&attr, (size_t)8 << 20);
        for (int i = 0; i < n_threads - 1; i++) {
            if (pthread_create(&p->threads[i], have_attr ? &attr : NULL, worker, p) != 0)
                break; /* run with the threads we got */
            p->n_threads++;
        }
        if (have_attr) pthread_attr_destroy(&attr);
    }
    return p;
}

void wd_pool_destroy(wd_pool *p) {
    if (!p) return;
    atomic_store(&p->stop, 1);
    atomic_fetch_add(&p->gen, 1);
    pthread_mutex_lock(&p->mu);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n_threads - 1; i++) pthread_join(p->threads[i], NULL);
    free(p->threads);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
}

int wd_pool_size(const wd_pool *p) { return p ? p->n_threads : 1; }

void wd_pool_run(wd_pool *p, wd_task_fn fn, void *ctx, int n_tasks) {
    if (n_tasks <= 0) return;
    if (!p || p->n_threads == 1 || n_tasks == 1) {
        for (int t = 0; t < n_tasks; t++) fn(ctx, t, n_tasks);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    p->n_tasks = n_tasks;
    atomic_store_explicit(&p->next, 0, memory_order_relaxed);
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    atomic_fetch_add(&p->gen, 1); /* seq_cst: publishes the fields above */
    if (atomic_load(&p->sleepers) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
    drain(p);
    int want = p->n_threads - 1;
    for (long i = 1; atomic_load_explicit(&p->done, memory_order_acquire) < want; i++) {
        WD_CPU_RELAX();
        if ((i & 4095) == 0) sched_yield(); /* a worker was preempted: let it run */
    }
}
