/* Results: the summary as a table and as JSON; atomic file writes. */
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "emulation/internal.h"

void wd_emu_summary_print(FILE *f, const wd_emu_summary *s) {
    const wd_emu_phase_summary *P = &s->prefill, *D = &s->decode;
    fprintf(f, "  %-28s %16s %16s\n", "", "prefill (TTFT)", "decode (TPOT)");
    const struct {
        const char *name;
        long p, d;
    } n[] = {
        {"forward passes", P->forwards, D->forwards},
        {"tokens", P->tokens, D->tokens},
        {"experts replaced (outage)", P->experts_replaced, D->experts_replaced},
        {"experts dropped", P->experts_dropped, D->experts_dropped},
        {"  of them not the straggler", P->experts_dropped_nonstraggler,
         D->experts_dropped_nonstraggler},
    };
    for (size_t i = 0; i < 2; i++) fprintf(f, "  %-28s %16ld %16ld\n", n[i].name, n[i].p, n[i].d);
    const struct {
        const char *name;
        double p, d;
    } ms[] = {
        {"latency mean (ms)", P->mean_s, D->mean_s},
        {"latency p50 (ms)", P->p50_s, D->p50_s},
        {"latency p95 (ms)", P->p95_s, D->p95_s},
        {"latency p99 (ms)", P->p99_s, D->p99_s},
        {"latency max (ms)", P->max_s, D->max_s},
        {"  BS compute (ms)", P->bs_s, D->bs_s},
        {"  downlink (ms)", P->dl_s, D->dl_s},
        {"  device compute (ms)", P->comp_s, D->comp_s},
        {"  uplink (ms)", P->ul_s, D->ul_s},
        {"  air interface (ms)", P->air_s, D->air_s},
        {"straggler wait (ms)", P->straggle_s, D->straggle_s},
    };
    for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++)
        fprintf(f, "  %-28s %16.4f %16.4f\n", ms[i].name, ms[i].p * 1e3, ms[i].d * 1e3);
    fprintf(f, "  %-28s %16.4f %16.4f\n", "experts per token", P->experts_per_token,
            D->experts_per_token);
    for (size_t i = 2; i < 5; i++) fprintf(f, "  %-28s %16ld %16ld\n", n[i].name, n[i].p, n[i].d);
    fprintf(f, "  %-28s %16.0f %16.0f\n", "downlink bits per token", P->dl_bits_per_token,
            D->dl_bits_per_token);
    fprintf(f, "  %-28s %16.0f %16.0f\n", "uplink bits per token", P->ul_bits_per_token,
            D->ul_bits_per_token);
    const struct {
        const char *name;
        double p, d;
    } en[] = {
        {"energy per token (mJ)", P->energy_per_token_j, D->energy_per_token_j},
        {"  downlink radio, total (mJ)", P->energy_dl_j, D->energy_dl_j},
        {"  uplink radio, total (mJ)", P->energy_ul_j, D->energy_ul_j},
        {"  device compute, total (mJ)", P->energy_device_j, D->energy_device_j},
        {"  BS compute, total (mJ)", P->energy_bs_j, D->energy_bs_j},
    };
    for (size_t i = 0; i < sizeof en / sizeof en[0]; i++)
        fprintf(f, "  %-28s %16.4g %16.4g\n", en[i].name, en[i].p * 1e3, en[i].d * 1e3);
    fprintf(f, "  %-28s %16ld\n", "layer steps", s->steps);
    fprintf(f, "  %-28s %16.6f\n", "virtual time (s)", s->virtual_time_s);
    fprintf(f, "  %-28s %16.4g\n", "energy, with idle (J)", s->energy_total_j);
    fprintf(f, "  %-28s %16.4g\n", "energy per token (mJ)", s->energy_per_token_j * 1e3);
    if (s->n_faults || s->tokens_rerouted || s->tokens_fallback || s->tokens_dropped ||
        s->tokens_slowed || s->tokens_link_fault) {
        const struct {
            const char *name;
            long v;
        } c[] = {
            {"tokens rerouted", s->tokens_rerouted},
            {"tokens on fallback", s->tokens_fallback},
            {"tokens dropped", s->tokens_dropped},
            {"tokens slowed", s->tokens_slowed},
            {"tokens on a faulty link", s->tokens_link_fault},
            {"layer steps rerouted", s->steps_rerouted},
            {"layer steps slowed", s->steps_slowed},
            {"layer steps on a faulty link", s->steps_link_fault},
        };
        for (size_t i = 0; i < sizeof c / sizeof c[0]; i++)
            fprintf(f, "  %-28s %16ld\n", c[i].name, c[i].v);
    }
}

static json_object *phase_json(const wd_emu_phase_summary *s) {
    json_object *o = json_object_new_object();
    if (!o) return NULL;
    json_object_object_add(o, "forwards", json_object_new_int64(s->forwards));
    json_object_object_add(o, "samples", json_object_new_int64(s->samples));
    json_object_object_add(o, "tokens", json_object_new_int64(s->tokens));
    const struct {
        const char *name;
        double v;
    } d[] = {
        {"mean_s", s->mean_s},
        {"p50_s", s->p50_s},
        {"p95_s", s->p95_s},
        {"p99_s", s->p99_s},
        {"max_s", s->max_s},
        {"bs_s", s->bs_s},
        {"downlink_s", s->dl_s},
        {"device_compute_s", s->comp_s},
        {"uplink_s", s->ul_s},
        {"air_interface_s", s->air_s},
        {"straggler_wait_s", s->straggle_s},
        {"experts_per_token", s->experts_per_token},
        {"downlink_bits_per_token", s->dl_bits_per_token},
        {"uplink_bits_per_token", s->ul_bits_per_token},
        {"energy_per_token_j", s->energy_per_token_j},
        {"energy_downlink_j", s->energy_dl_j},
        {"energy_uplink_j", s->energy_ul_j},
        {"energy_device_j", s->energy_device_j},
        {"energy_bs_j", s->energy_bs_j},
    };
    for (size_t i = 0; i < sizeof d / sizeof d[0]; i++)
        json_object_object_add(o, d[i].name, json_object_new_double(d[i].v));
    json_object_object_add(o, "experts_replaced", json_object_new_int64(s->experts_replaced));
    json_object_object_add(o, "experts_dropped", json_object_new_int64(s->experts_dropped));
    json_object_object_add(o, "experts_dropped_nonstraggler",
                           json_object_new_int64(s->experts_dropped_nonstraggler));
    return o;
}

struct json_object *wd_emu_summary_json(const wd_emu_summary *s) {
    json_object *o = json_object_new_object();
    if (!o) return NULL;
    json_object_object_add(o, "tokens", json_object_new_int64(s->tokens));
    json_object_object_add(o, "forwards", json_object_new_int64(s->forwards));
    json_object_object_add(o, "steps", json_object_new_int64(s->steps));
    json_object_object_add(o, "prefill", phase_json(&s->prefill));
    json_object_object_add(o, "decode", phase_json(&s->decode));
    json_object_object_add(o, "experts_replaced", json_object_new_int64(s->experts_replaced));
    json_object_object_add(o, "experts_dropped", json_object_new_int64(s->experts_dropped));
    json_object_object_add(o, "virtual_time_s", json_object_new_double(s->virtual_time_s));
    json_object_object_add(o, "energy_active_j", json_object_new_double(s->energy_active_j));
    json_object_object_add(o, "energy_idle_j", json_object_new_double(s->energy_idle_j));
    json_object_object_add(o, "energy_total_j", json_object_new_double(s->energy_total_j));
    json_object_object_add(o, "energy_per_token_j",
                           json_object_new_double(s->energy_per_token_j));
    const struct {
        const char *name;
        long v;
    } c[] = {
        {"tokens_rerouted", s->tokens_rerouted},   {"tokens_fallback", s->tokens_fallback},
        {"tokens_dropped", s->tokens_dropped},     {"tokens_slowed", s->tokens_slowed},
        {"tokens_link_fault", s->tokens_link_fault}, {"steps_rerouted", s->steps_rerouted},
        {"steps_slowed", s->steps_slowed},         {"steps_link_fault", s->steps_link_fault},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++)
        json_object_object_add(o, c[i].name, json_object_new_int64(c[i].v));
    return o;
}

struct json_object *wd_emu_devices_json(const wd_emu *emu) {
    json_object *arr = json_object_new_array();
    if (!arr) return NULL;
    const wd_scenario *sc = wd_emu_scenario(emu);
    for (int d = 0; d < wd_emu_n_devices(emu); d++) {
        wd_emu_device_stats ds;
        wd_emu_device_stats_get(emu, d, &ds);
        json_object *o = json_object_new_object();
        json_object_object_add(o, "name", json_object_new_string(sc->dev[d].name));
        const struct {
            const char *name;
            double v;
        } f[] = {{"utilisation", ds.utilisation},         {"busy_s", ds.busy_s},
                 {"queue_wait_s", ds.queue_wait_s},       {"energy_compute_j", ds.energy_compute_j},
                 {"energy_idle_j", ds.energy_idle_j},     {"energy_downlink_j", ds.energy_dl_j},
                 {"energy_uplink_j", ds.energy_ul_j}};
        for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
            json_object_object_add(o, f[i].name, json_object_new_double(f[i].v));
        json_object_object_add(o, "calls", json_object_new_int64(ds.calls));
        json_object_object_add(o, "tokens", json_object_new_int64(ds.tokens));
        json_object_object_add(o, "max_queue", json_object_new_int(ds.max_queue));
        if (ds.jobs > 0) { /* pipelined micro-batches: the device queue across them */
            json_object_object_add(o, "jobs", json_object_new_int64(ds.jobs));
            json_object_object_add(o, "queued_jobs", json_object_new_int64(ds.queued_jobs));
            json_object_object_add(o, "mean_queue_ahead",
                                   json_object_new_double((double)ds.queue_ahead_sum / ds.jobs));
        }
        json_object_array_add(arr, o);
    }
    return arr;
}

void wd_emu_devices_print(FILE *f, const wd_emu *emu) {
    const wd_scenario *sc = wd_emu_scenario(emu);
    fprintf(f, "  %-16s %8s %9s %10s %9s %10s %10s %10s\n", "device", "util %", "calls",
            "tok/call", "max queue", "queue ms", "compute J", "radio J");
    for (int d = 0; d < wd_emu_n_devices(emu); d++) {
        wd_emu_device_stats ds;
        wd_emu_device_stats_get(emu, d, &ds);
        fprintf(f, "  %-16.16s %8.2f %9ld %10.2f %9d %10.3f %10.4g %10.4g\n", sc->dev[d].name,
                100 * ds.utilisation, ds.calls, ds.calls ? (double)ds.tokens / ds.calls : 0,
                ds.max_queue, ds.queue_wait_s * 1e3, ds.energy_compute_j,
                ds.energy_dl_j + ds.energy_ul_j);
    }
}

int wd_atomic_open(wd_atomic_file *a, const char *path, char *err, size_t errlen) {
    memset(a, 0, sizeof *a);
    if (snprintf(a->path, sizeof a->path, "%s", path) >= (int)sizeof a->path)
        return wd_fail(err, errlen, "%s: path too long", path);
    snprintf(a->tmp, sizeof a->tmp, "%s.tmp.%ld", path, (long)getpid());
    a->f = fopen(a->tmp, "wb");
    if (!a->f) return wd_fail(err, errlen, "%s: cannot create: %s", a->tmp, strerror(errno));
    return 0;
}

void wd_atomic_abort(wd_atomic_file *a) {
    if (a->f) fclose(a->f), remove(a->tmp);
    a->f = NULL;
}

int wd_atomic_commit(wd_atomic_file *a, char *err, size_t errlen) {
    if (!a->f) return wd_fail(err, errlen, "%s: not open", a->path);
    int bad = fflush(a->f) != 0 || ferror(a->f) || fsync(fileno(a->f)) != 0;
    int e = errno;
    bad |= fclose(a->f) != 0;
    a->f = NULL;
    if (bad || rename(a->tmp, a->path) != 0) {
        if (!bad) e = errno;
        remove(a->tmp);
        return wd_fail(err, errlen, "%s: cannot write: %s", a->path, strerror(e));
    }
    return 0;
}

int wd_emu_write_atomic(const char *path, const void *data, size_t len, char *err, size_t errlen) {
    wd_atomic_file a;
    if (wd_atomic_open(&a, path, err, errlen)) return 1;
    if (len && fwrite(data, 1, len, a.f) != len) {
        wd_atomic_abort(&a);
        return wd_fail(err, errlen, "%s: cannot write: %s", path, strerror(errno));
    }
    return wd_atomic_commit(&a, err, errlen);
}
