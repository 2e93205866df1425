/* host/cli.h: the subcommands of the `wdmoe` binary and small helpers they share.
 * Each subcommand lives in host/cmd_<name>.c and is listed in host/main.c. */
#ifndef WD_CLI_H
#define WD_CLI_H

#include <signal.h>
#include <stdio.h>

typedef struct {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv); /* argv[0] is the subcommand name */
} wd_command;

int wd_cmd_generate(int argc, char **argv);
int wd_cmd_eval(int argc, char **argv);
int wd_cmd_trace(int argc, char **argv);
int wd_cmd_replay(int argc, char **argv);
int wd_cmd_serve(int argc, char **argv);
int wd_cmd_serve_cell(int argc, char **argv);
int wd_cmd_moefy(int argc, char **argv);
int wd_cmd_tokenize(int argc, char **argv);

/* SIGINT/SIGTERM: the first one sets a flag that long loops poll to stop
 * cleanly and write what is complete; a second one ends the process. */
void wd_cli_install_signals(void);
int wd_cli_interrupted(void);
/* The flag itself, for loops that take a pointer (wd_eval_opts.stop). A first
 * SIGTERM also ends the process after a 10 s grace period, so a single
 * SIGTERM (`timeout`) always stops a run. */
const volatile sig_atomic_t *wd_cli_interrupt_flag(void);
/* path is (or will be) written atomically through "<path>.tmp.<pid>"
 * (wd_atomic_open, the .wdpr writer): a second signal removes that
 * temporary file before ending the process, so nothing partial is left. */
void wd_cli_remove_on_quit(const char *path);
/* A malloc'd copy of s that is valid UTF-8 (each invalid byte becomes
 * U+FFFD), for JSON output of generated text; NULL when out of memory. */
char *wd_cli_utf8(const char *s);
/* "12.3 MB", "4.56 GB", "7.8 TB" (decimal units). */
void wd_cli_format_bytes(char *buf, size_t cap, double bytes);

/* The output guard (host/outputs.c), one for every command: collect the
 * inputs and the outputs, then wd_cli_io_check before any work. It refuses an
 * output that is an input (same device and inode), two outputs naming one
 * file, an output that exists and is not a regular file, and an output whose
 * folder does not exist or is not writable: one line on stderr, returns the
 * exit status 2 (1 when out of memory); 0 when all is well. Inputs that do not
 * exist are skipped (their loader reports them). */
#define WD_CLI_IO_MAX_OUT 8
typedef struct {
    const char *cmd;
    struct wd_cli_io_in *in;
    int n_in, cap_in, oom, n_out;
    struct {
        const char *opt, *path;
    } out[WD_CLI_IO_MAX_OUT];
} wd_cli_io;
void wd_cli_io_init(wd_cli_io *io, const char *cmd);
/* what: for the message ("the data", "the probabilities"); path may be NULL */
int wd_cli_io_input(wd_cli_io *io, const char *path, const char *what);
/* the files of folder dir whose names end in one of the '|'-separated suffixes */
int wd_cli_io_folder(wd_cli_io *io, const char *dir, const char *suffixes, const char *what);
int wd_cli_io_model(wd_cli_io *io, const char *path);    /* a .gguf, or a folder's model files */
int wd_cli_io_scenario(wd_cli_io *io, const char *path); /* the file and its trace files */
/* an eval data set: the file, or a folder's data files, and MMLU's dev split */
int wd_cli_io_eval_data(wd_cli_io *io, const char *path);
void wd_cli_io_output(wd_cli_io *io, const char *opt, const char *path); /* path may be NULL */
int wd_cli_io_check(wd_cli_io *io);
void wd_cli_io_free(wd_cli_io *io);

/* The option convention of every command (host/cli_args.c): a new argv (free
 * it, not its strings) where --name=VALUE is split in two and llama.cpp's
 * short aliases (-m -p -f -n -t -c -s, --temp) are spelled out where the
 * command has that option; NULL when out of memory. */
char **wd_cli_normalize(const char *cmd, int argc, char **argv, int *out_argc);

/* Provenance of a result file (host/provenance.c): schema_version,
 * wdmoe_version, git_commit, date, command_line, seeds. Bumped when a result
 * file changes shape (docs/results.md). */
#define WD_RESULT_SCHEMA 2
struct json_object;
void wd_cli_provenance(struct json_object *doc, const char *cmd, int argc, char **argv,
                       const char *const *seed_names, const long long *seeds, int n_seeds);

/* Option parsing helpers: each prints "wdmoe CMD: bad value for --opt: 'x'"
 * and returns non-zero when the value is not a number in [lo, hi]. */
int wd_cli_int(const char *cmd, const char *opt, const char *val, long lo, long hi, int *out);
int wd_cli_double(const char *cmd, const char *opt, const char *val, double lo, double hi,
                  double *out);
/* "1,2,3" (commas and/or spaces) -> *ids (malloc'd), each in [0, vocab);
 * prints "wdmoe CMD: --prompt-ids: ..." and returns non-zero when it is not. */
int wd_cli_parse_ids(const char *cmd, const char *list, int vocab, int **ids, int *n);
/* argv[*i] is an option taking a value: returns the value and advances *i, or
 * prints "wdmoe CMD: OPT needs a value" and returns NULL. */
const char *wd_cli_value(const char *cmd, int argc, char **argv, int *i);

/* Routing options of generate and eval: --top-k K (override the model's k)
 * and --router learned|oracle (oracle: the experts with the largest output
 * norm, CPU only; for quality studies of MoEfied models). */
typedef struct {
    int top_k;  /* 0: the model's */
    int oracle;
} wd_cli_route;
extern const char *const wd_cli_route_help;
/* argv[*i] is --top-k or --router: 1 (consumed), 0 (not one), -1 (bad value). */
int wd_cli_route_option(const char *cmd, int argc, char **argv, int *i, wd_cli_route *o);
/* Checks K against the model's experts and sets its top_k; the oracle runs
 * neither on CUDA nor over an emulated system (emulated: a scenario or
 * policy); 0, or 2 with a message printed. cfg_top_k: &model->cfg.top_k, n_experts: the model's. */
int wd_cli_route_apply(const char *cmd, const wd_cli_route *o, int n_experts, int *cfg_top_k,
                       int cuda, int emulated);

/* CUDA options (host/cli_cuda.c): --gpus, --gpu, --no-cuda-graphs, --ranks,
 * --rank, --nccl-id. */
typedef struct {
    int gpus, gpu, ranks, rank, graphs;
    const char *nccl_id_path;
    unsigned char nccl_id[128]; /* sizeof(ncclUniqueId) */
} wd_cli_cuda;
extern const char *const wd_cli_cuda_help; /* option lines for --help */
void wd_cli_cuda_init(wd_cli_cuda *o);
/* argv[*i] is one of the CUDA options: 1 (consumed, *i advanced), 0 (not
 * one of them), -1 (bad value, message printed: exit 2). */
int wd_cli_cuda_option(const char *cmd, int argc, char **argv, int *i, wd_cli_cuda *o);
/* Consistency of the options (serving: `wdmoe serve`), then the backend
 * ("cpu" or "cuda", the latter only in a build with the CUDA backend); 0 or
 * the exit status 2 with one line printed. */
int wd_cli_cuda_check(const char *cmd, const wd_cli_cuda *o, const char *backend, int serving);
#ifdef WD_HAVE_CUDA
#include "host/cuda_runner.h"
/* Fills the GPU fields of spec and, with --ranks > 1, exchanges the NCCL id
 * through the --nccl-id file; 0, or 1 with a message printed. */
int wd_cli_cuda_spec(const char *cmd, wd_cli_cuda *o, wd_cuda_model_spec *spec);
/* After the model is created (all ranks joined) or failed: rank 0 removes the
 * --nccl-id file, so a later run never picks up a stale id. */
void wd_cli_cuda_bootstrap_done(const wd_cli_cuda *o);
#endif

#endif
