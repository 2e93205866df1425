/* Private to emulation/emu.c, stats.c and energy.c: the emulator's state. */
#ifndef WD_EMU_PRIVATE_H
#define WD_EMU_PRIVATE_H

#include "emulation/internal.h"

struct wd_emu {
    wd_scenario sc; /* deep copy */
    wd_emu_shape shape;
    int has_shape, nd, E, L, k;
    int may_stall; /* a link can drop to rate 0 mid-transfer (faults, fading, traces) */
    const wd_policy *pol;
    wd_policy_params par;
    wd_policy custom; /* wd_emu_set_policy_fn: pol points here */
    void *pol_user;
    wd_link **link; /* [nd * 2] */
    unsigned char *air_on; /* [nd * 2]: the link pays the air interface */
    unsigned char *split;  /* [nd * 2]: the link's capacity is the band shared by the active
                              devices (else the device's own: a trace, used whole) */
    int *c_active;         /* [nd] the devices sharing the band in allocate() */
    double *c_ready, *c_bits, *c_share;
    double air_mean[2], air_duty[2]; /* prediction: mean overhead of a small transfer, duty */
    wd_air_geo air_geo;              /* of sc.radio.air */
    wd_synth *syn;  /* [nd] */
    unsigned char *has_syn;
    int *los;
    int *rep_off, *rep_dev; /* expert e on devices rep_dev[rep_off[e] .. rep_off[e+1]) */
    int *rep;               /* [E] replica in use now (-1: none reachable) */
    double rep_time;
    double bits_tok, s0, bs_flops_tok, bs_bytes_step, bs1;
    int any_syn, rep_dirty; /* rep_dirty: recompute the best replicas */
    double *tc1;            /* [nd] compute time of one token through one expert */
    double *tau_dev, *tau_e, *tau_best;
    double *en_dev, *en_e; /* predicted energy of one token through a device / expert (J) */
    double p_bs_w, p_ue_w; /* transmit powers (W) */
    struct dev_acc {       /* per device since the last reset: busy time, energy, calls, queue */
        double busy, e_c, e_dl, e_ul, qwait;
        long calls, tokens, jobs, queued_jobs, ahead_sum;
        int max_q;
    } *dacc;
    double bs_busy, t_reset; /* BS busy time; clock at the last reset */
    double *tau_from, *tau_until; /* tau_dev[d] holds on [from, until) */
    double pred_lo, pred_hi;      /* all of them hold on [pred_lo, pred_hi) */
    double forget_t;              /* the synthetic channels drop nothing before */
    unsigned char *avail_e, *mark;
    /* step scratch */
    long gen, tok;
    long *dev_gen, *dev_tok, *exp_gen;
    int *cnt_e, *exp_dev, *exp_list, *active, *slot, n_active, n_exp;
    wd_emu_dev_time *dt;
    double *ready, *bits, *share;
    double *pscratch;
    size_t pscratch_n;
    double t;
    /* statistics, per phase (PH_PREFILL, PH_DECODE): one latency sample per
     * forward pass (prefill: time to first token; decode: time per output
     * token), sums of the critical-path terms per forward */
    wd_emu_phase phase_mode;
    struct phase_acc {
        double *lat;
        size_t n_lat, cap_lat;
        long forwards, tokens, replaced, dropped, nonstraggler;
        double bs, dl, c, ul, air, str, experts, token_layers, bits_dl, bits_ul;
        double e_dl, e_ul, e_c, e_bs; /* energy (J): radio, device compute, BS compute */
    } ph[2];
    long steps;
    int fwd_open, f_phase;
    int prefill_open; /* explicit prefill: later prefill passes join the open sample */
    int last_closed;  /* phase of the forward just closed (-1: none, or a step since) */
    int last_new;     /* it started a latency sample */
    double f_start, f_bs, f_dl, f_c, f_ul, f_air, f_str;
    long sel_replaced; /* of the last selection: top-k experts replaced (outage) */
    long sel_nonstraggler; /* of the last selection: drops of experts faster than the wait */
    int *base_ids;         /* [base_cap] scratch of mark_selection */
    size_t base_cap;
    /* the plan select's outage check left in dt, for the step to reuse: valid
     * while no other plan ran, for the same start t1 and selection */
    int planned_valid, planned_tokens;
    double planned_t1;
    int *planned_sel; /* [planned_cap]: n[t] then expert rows */
    size_t planned_cap;
    /* faults and unreachable experts: per-token flags (FL_*) of the last
     * selection (sel_n tokens, -1: none pending) and of the open forward */
    unsigned char *sel_flag, *fwd_flag, *dev_flag;
    int *top_ids;
    int flag_cap, sel_n, fwd_n;
    long c_tok[5], c_steps[3];
    /* pipelined micro-batches (wd_emu_pipeline_*; pipe_n 0: the synchronous
     * layer step): each micro-batch's clock and open forward pass, the BS, every
     * device and every link busy until */
    int pipe_n, pipe_cur;
    int pipe_carry;    /* the busy state carries into the next begin with start times */
    double pipe_floor; /* the earliest micro-batch clock at the last end */
    struct mb_ctx {
        double ready; /* the micro-batch's clock: its next BS work may start */
        int fwd_open, f_phase, fwd_n, last_closed, last_new;
        double f_start, f_bs, f_dl, f_c, f_ul, f_air, f_str;
        unsigned char *flag; /* [fwd_n] its forward's per-token fault flags */
        int flag_cap;
    } *mb;
    int mb_cap;
    double *bs_iv; /* [2 n_iv] the BS's busy intervals [start, end), sorted */
    int n_iv, cap_iv;
    double *dev_free;   /* [nd] busy until at least (the reset's time) */
    double *link_free;  /* [2 nd] busy until at least (the reset's time) */
    int jobs_cap;       /* slots per device in jobs, per link in xfers (doubled when full) */
    struct xfer {       /* [2 nd][jobs_cap]: the transfers on each link [start, end) */
        double start, end;
    } *xfers;
    struct dev_job {    /* [nd][jobs_cap]: the jobs of each device (busy [start, end), calls) */
        double start, end;
        int calls;
    } *jobs;
    double *t_start_dir; /* [3 nd] scratch of plan: per active slot the downlink start,
                          * the compute end and the compute start */
};


enum { PH_PREFILL = 0, PH_DECODE = 1 };
enum { FL_REROUTED = 1, FL_FALLBACK = 2, FL_DROPPED = 4, FL_SLOWED = 8, FL_LINK = 16 };

/* emu.c */
double wd_emu_slow_factor(const wd_emu *emu, int d, double t); /* slow faults at t */
double wd_emu_expert_time(const wd_emu *emu, int d, int n);   /* roofline of n tokens */

/* pipeline.c: the pipelined micro-batches' state */
double wd_emu_pipe_scale(const wd_emu *emu, int d, int dir, double t); /* share scale at t */
/* Device d's job arriving at t for dur: it starts in the earliest idle gap of
 * the device from t (after dev_free) that holds dur; ahead: the calls of the
 * jobs it finds unfinished at t and served before its start. */
double wd_emu_pipe_dev_fit(const wd_emu *emu, int d, double t, double dur);
int wd_emu_pipe_ahead(const wd_emu *emu, int d, double t, double start);
int wd_emu_pipe_commit(wd_emu *emu); /* the step just planned; 1: no memory */
/* BS work of dur from t on: the earliest start >= t where the BS is idle for
 * dur (dur 0: idle at that instant); reserve: and mark it busy (1: no memory). */
double wd_emu_pipe_bs_fit(const wd_emu *emu, double t, double dur);
int wd_emu_pipe_bs_reserve(wd_emu *emu, double start, double dur);
double wd_emu_pipe_keep(const wd_emu *emu); /* no micro-batch starts a step before */
void wd_emu_pipe_free(wd_emu *emu);

/* energy.c: energy and per-device accounting */
/* The step just planned (dt, exp_list): radio, device and BS energy into
 * the phase a and the devices; busy time, calls, queue. */
void wd_emu_account_energy(wd_emu *emu, struct phase_acc *a, double tbs);
void wd_emu_energy_reset(wd_emu *emu);
void wd_emu_energy_summarize(const wd_emu *emu, wd_emu_summary *s); /* after the phases */

/* stats.c: fault accounting and statistics */
int wd_emu_reserve_flags(wd_emu *emu, int n);
/* Per token of the selection just made: rerouted, fallback, dropped flags;
 * experts replaced on outage and dropped although not the straggler. */
void wd_emu_mark_selection(wd_emu *emu, int n_tokens, const float *probs, const int *n,
                           const int *expert);
/* The fault flags of a planned step (devices in dt, compute from t1); 1: no memory. */
int wd_emu_account_faults(wd_emu *emu, int n_tokens, const int *n, const int *expert, double t1);
/* The statistics of a step taken (clock already advanced); 1: no memory. */
int wd_emu_record_step(wd_emu *emu, int layer, int n_tokens, const int *n, double t0, double tbs,
                       double wait, double sum, int crit);

#endif
