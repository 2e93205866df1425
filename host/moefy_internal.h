/* host/moefy_internal.h: what moefy.c (building) hands moefy_write.c (files). */
#ifndef WD_MOEFY_INTERNAL_H
#define WD_MOEFY_INTERNAL_H

#include "host/host.h"

typedef struct {
    int *perm;             /* [F]: expert e holds neurons perm[e*F/E .. (e+1)*F/E) */
    float *router;         /* [E][H] f32 */
    double *router_freq;   /* [E] fraction of calibration tokens with e in the router's top-k */
    double *oracle_freq;   /* [E] the same for the oracle (largest output norms) */
    double heldout_overlap; /* router top-k overlap with the oracle on held-out text (-1: none) */
    int iters;             /* clustering iterations */
    wd_dtype down_dtype;   /* dtype of down (w2) */
    unsigned char *down;   /* [E][H][F/E] in down_dtype */
} wd_moefy_layer;

typedef struct {
    wd_moefy_opts opts; /* top_k resolved */
    int n_layers, n_seq;
    wd_moefy_layer *layers;
    double t_calib, t_layers;
} wd_moefy_result;

int wd_moefy_build(const wd_model *m, const wd_moefy_opts *o, wd_pool *pool,
                   wd_moefy_result *res, char *err, size_t errlen);
int wd_moefy_write(const wd_model *m, const wd_moefy_result *res, const char *out_dir, char *err,
                   size_t errlen);
void wd_moefy_result_free(wd_moefy_result *r);
/* The calibration prompts in order (NULL past the last). */
const char *wd_moefy_prompt(int i);

#endif
