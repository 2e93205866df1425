/* A fixed thread pool built for many short runs (a decode step makes a few
 * hundred wd_pool_run calls of 20-500 us each).
 *
 * wd_pool_run moves a 64-bit state word (generation << 32 | next task
 * index) to (new generation, SETUP), writes (fn, ctx, n_tasks), then opens
 * the run with (new generation, 0); it works on tasks itself and returns
 * once every task has completed. Threads claim a task with a compare-and-swap
 * on the state word, so a worker that wakes late (or was preempted) can never
 * claim a task of a later run with the function it read for an earlier one,
 * and the caller never waits for a worker that took no task: on a busy
 * machine a descheduled worker costs nothing but its share of the work.
 * Idle workers spin on the state word for a while (the next run starts them
 * in well under a microsecond) and then sleep on a condition variable; the
 * caller signals it only when some worker sleeps. The sleep hand-off is a
 * Dekker pair on seq_cst atomics: a worker bumps `sleepers` and re-reads the
 * state under the mutex before waiting; the caller stores the state and then
 * reads `sleepers`, so one of them sees the other. */
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
    _Alignas(64) _Atomic uint64_t state; /* gen << 32 | next task */
    _Atomic(wd_task_fn) fn;
    _Atomic(void *) ctx;
    atomic_int n_tasks;
    _Alignas(64) atomic_int completed; /* tasks finished in this run */
    _Alignas(64) atomic_int sleepers;
    atomic_int stop;
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

#define WD_POOL_SETUP 0xffffffffu /* task field while the caller writes fn/ctx/n */

/* Claim and run tasks of generation `gen` until none is left. fn/ctx/n use
 * seq_cst so that, with the state word, they sit in one total order: a
 * successful claim proves the state did not move since it was loaded, and
 * the caller writes a new run's fn/ctx/n only after moving the state to
 * (new gen, SETUP), so the values read are this run's. */
static void drain(wd_pool *p, uint32_t gen) {
    uint64_t st = atomic_load(&p->state);
    for (;;) {
        if ((uint32_t)(st >> 32) != gen) return;
        if ((uint32_t)st == WD_POOL_SETUP) { /* the caller is publishing this run */
            WD_CPU_RELAX();
            st = atomic_load(&p->state);
            continue;
        }
        wd_task_fn fn = atomic_load(&p->fn);
        void *ctx = atomic_load(&p->ctx);
        int n = atomic_load(&p->n_tasks);
        int t = (int)(uint32_t)st;
        if (t >= n) return;
        if (atomic_compare_exchange_weak(&p->state, &st, st + 1)) {
            fn(ctx, t, n);
            atomic_fetch_add_explicit(&p->completed, 1, memory_order_release);
            st = atomic_load(&p->state);
        }
    }
}

static void *worker(void *arg) {
    wd_pool *p = arg;
    uint32_t seen = 0; /* generation 0 is the pool's creation: nothing to do */
    for (;;) {
        uint32_t g = (uint32_t)(atomic_load_explicit(&p->state, memory_order_acquire) >> 32);
        if (g == seen) {
            long t0 = now_ns();
            for (int i = 1;; i++) {
                WD_CPU_RELAX();
                g = (uint32_t)(atomic_load_explicit(&p->state, memory_order_acquire) >> 32);
                if (g != seen) break;
                if ((i & 63) == 0 && now_ns() - t0 > WD_POOL_SPIN_NS) break;
            }
        }
        if (g == seen) {
            pthread_mutex_lock(&p->mu);
            atomic_fetch_add(&p->sleepers, 1);
            while ((g = (uint32_t)(atomic_load(&p->state) >> 32)) == seen)
                pthread_cond_wait(&p->cv, &p->mu);
            atomic_fetch_sub(&p->sleepers, 1);
            pthread_mutex_unlock(&p->mu);
        }
        seen = g;
        if (atomic_load_explicit(&p->stop, memory_order_acquire)) break;
        drain(p, g);
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
    atomic_init(&p->state, 0);
    atomic_init(&p->fn, NULL);
    atomic_init(&p->ctx, NULL);
    atomic_init(&p->n_tasks, 0);
    atomic_init(&p->completed, 0);
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
    atomic_fetch_add(&p->state, (uint64_t)1 << 32);
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
    /* close the previous run's state word first (see drain), then publish */
    uint64_t st = atomic_load_explicit(&p->state, memory_order_relaxed);
    uint32_t gen = (uint32_t)(st >> 32) + 1;
    if (gen == 0) gen = 1; /* 0 means "created" to a new worker */
    atomic_store(&p->state, ((uint64_t)gen << 32) | WD_POOL_SETUP);
    atomic_store(&p->fn, fn);
    atomic_store(&p->ctx, ctx);
    atomic_store(&p->n_tasks, n_tasks);
    atomic_store_explicit(&p->completed, 0, memory_order_relaxed);
    atomic_store(&p->state, (uint64_t)gen << 32);
    if (atomic_load(&p->sleepers) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
    drain(p, gen);
    for (long i = 1; atomic_load_explicit(&p->completed, memory_order_acquire) < n_tasks; i++) {
        WD_CPU_RELAX();
        if ((i & 4095) == 0) sched_yield(); /* a worker holding a task was preempted */
    }
}
