/* The output guard shared by every command: inputs and outputs are collected
 * before the run; an output that is an input (same device and inode, so hard
 * links, symbolic links and other spellings of a path count), two outputs
 * naming one file, an output that is a folder, FIFO or device (results are
 * written to "<path>.tmp.<pid>" and renamed over it), and an output whose
 * folder is missing or not writable are refused with one line, before any
 * work is done. */
#include <dirent.h>
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "emulation/emulation.h"
#include "host/cli.h"

struct wd_cli_io_in {
    char *path;
    const char *what;
    dev_t dev;
    ino_t ino;
};

void wd_cli_io_init(wd_cli_io *io, const char *cmd) {
    memset(io, 0, sizeof *io);
    io->cmd = cmd;
}

void wd_cli_io_free(wd_cli_io *io) {
    for (int i = 0; i < io->n_in; i++) free(io->in[i].path);
    free(io->in);
    io->in = NULL, io->n_in = 0;
}

int wd_cli_io_input(wd_cli_io *io, const char *path, const char *what) {
    struct stat st;
    if (!path || stat(path, &st) != 0 || S_ISDIR(st.st_mode)) return 0; /* the loader reports it */
    if (io->n_in == io->cap_in) {
        int c = io->cap_in ? 2 * io->cap_in : 16;
        struct wd_cli_io_in *p = realloc(io->in, (size_t)c * sizeof *p);
        if (!p) return io->oom = 1;
        io->in = p, io->cap_in = c;
    }
    char *copy = strdup(path);
    if (!copy) return io->oom = 1;
    io->in[io->n_in++] = (struct wd_cli_io_in){copy, what, st.st_dev, st.st_ino};
    return 0;
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

/* The files of a folder that a loader reads: names ending in one of the
 * '|'-separated suffixes of `names` ("config.json|.safetensors"). */
int wd_cli_io_folder(wd_cli_io *io, const char *dir, const char *names, const char *what) {
    DIR *d = dir ? opendir(dir) : NULL;
    if (!d) return 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        int want = 0;
        for (const char *p = names; *p && !want;) {
            const char *bar = strchr(p, '|');
            size_t n = bar ? (size_t)(bar - p) : strlen(p);
            char suf[64];
            snprintf(suf, sizeof suf, "%.*s", (int)(n < 63 ? n : 63), p);
            want = ends_with(e->d_name, suf);
            p += n + (bar != NULL);
        }
        char path[PATH_MAX];
        if (want && snprintf(path, sizeof path, "%s/%s", dir, e->d_name) < (int)sizeof path)
            wd_cli_io_input(io, path, what);
    }
    closedir(d);
    return io->oom;
}

int wd_cli_io_model(wd_cli_io *io, const char *path) {
    struct stat st;
    if (path && stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return wd_cli_io_folder(io, path,
                                "config.json|tokenizer.json|tokenizer_config.json|.safetensors|"
                                ".safetensors.index.json|.gguf|tokenizer.model",
                                "a file of the model");
    return wd_cli_io_input(io, path, "the model");
}

int wd_cli_io_scenario(wd_cli_io *io, const char *path) {
    if (wd_cli_io_input(io, path, "the scenario")) return 1;
    wd_scenario sc;
    char err[256];
    if (!path || wd_scenario_load(&sc, path, err, sizeof err)) return 0; /* reported later */
    for (int d = 0; d < sc.n_devices; d++)
        for (int k = 0; k < 2; k++)
            if (sc.dev[d].link[k].model == WD_LINK_CSV ||
                sc.dev[d].link[k].model == WD_LINK_MAHIMAHI)
                wd_cli_io_input(io, sc.dev[d].link[k].file, "a trace of the scenario");
    wd_scenario_free(&sc);
    return io->oom;
}

int wd_cli_io_eval_data(wd_cli_io *io, const char *path) {
    struct stat st;
    if (!path || stat(path, &st) != 0) return 0;
    char dir[PATH_MAX], dev[PATH_MAX + 8];
    snprintf(dir, sizeof dir, "%s", path);
    if (S_ISDIR(st.st_mode)) {
        wd_cli_io_folder(io, path, ".csv", "a file of the data"); /* MMLU's test split */
    } else {
        wd_cli_io_input(io, path, "the data");
        snprintf(dir, sizeof dir, "%s", dirname(dir));
    }
    snprintf(dev, sizeof dev, "%s/../dev", dir); /* MMLU: the few-shot examples */
    return wd_cli_io_folder(io, dev, ".csv", "a file of the data's dev split");
}

void wd_cli_io_output(wd_cli_io *io, const char *opt, const char *path) {
    if (!path || io->n_out == WD_CLI_IO_MAX_OUT) return;
    io->out[io->n_out].opt = opt;
    io->out[io->n_out].path = path;
    io->n_out++;
}

/* "<real folder>/<name>": one spelling per location, for files that do not exist yet. */
static int canonical(const char *path, char *out, size_t cap) {
    char a[PATH_MAX], b[PATH_MAX], real[PATH_MAX];
    snprintf(a, sizeof a, "%s", path);
    snprintf(b, sizeof b, "%s", path);
    if (!realpath(dirname(a), real)) return 1;
    return snprintf(out, cap, "%s/%s", real, basename(b)) >= (int)cap;
}

int wd_cli_io_check(wd_cli_io *io) {
    const char *C = io->cmd;
    if (io->oom) {
        fprintf(stderr, "wdmoe %s: out of memory\n", C);
        return 1;
    }
    char canon[WD_CLI_IO_MAX_OUT][PATH_MAX];
    struct stat st[WD_CLI_IO_MAX_OUT];
    int exists[WD_CLI_IO_MAX_OUT];
    for (int i = 0; i < io->n_out; i++) {
        const char *opt = io->out[i].opt, *p = io->out[i].path;
        char dir[PATH_MAX];
        snprintf(dir, sizeof dir, "%s", p);
        const char *folder = dirname(dir);
        struct stat ds;
        if (!*p) {
            fprintf(stderr, "wdmoe %s: %s: an empty path\n", C, opt);
            return 2;
        }
        if (p[strlen(p) - 1] == '/') {
            fprintf(stderr, "wdmoe %s: %s %s: names a folder, not a file\n", C, opt, p);
            return 2;
        }
        if (stat(folder, &ds) != 0 || !S_ISDIR(ds.st_mode)) {
            fprintf(stderr, "wdmoe %s: %s %s: the folder %s does not exist\n", C, opt, p, folder);
            return 2;
        }
        if (access(folder, W_OK | X_OK) != 0) {
            fprintf(stderr, "wdmoe %s: %s %s: the folder %s is not writable\n", C, opt, p,
                    folder);
            return 2;
        }
        exists[i] = stat(p, &st[i]) == 0;
        if (exists[i] && !S_ISREG(st[i].st_mode)) {
            fprintf(stderr,
                    "wdmoe %s: %s %s: exists and is not a regular file (%s); results are "
                    "written to a temporary file renamed over it\n",
                    C, opt, p, S_ISDIR(st[i].st_mode) ? "a folder" : "a FIFO, device or socket");
            return 2;
        }
        if (canonical(p, canon[i], sizeof canon[i])) snprintf(canon[i], sizeof canon[i], "%s", p);
        if (exists[i])
            for (int j = 0; j < io->n_in; j++)
                if (io->in[j].dev == st[i].st_dev && io->in[j].ino == st[i].st_ino) {
                    int same = !strcmp(p, io->in[j].path);
                    fprintf(stderr, "wdmoe %s: %s %s is %s%s%s%s: refusing to overwrite an input\n",
                            C, opt, p, io->in[j].what, same ? "" : " (", same ? "" : io->in[j].path,
                            same ? "" : ")");
                    return 2;
                }
        for (int j = 0; j < i; j++)
            if (!strcmp(canon[i], canon[j]) ||
                (exists[i] && exists[j] && st[i].st_dev == st[j].st_dev &&
                 st[i].st_ino == st[j].st_ino)) {
                fprintf(stderr, "wdmoe %s: %s and %s both name %s: give each output its own file\n",
                        C, io->out[j].opt, opt, p);
                return 2;
            }
    }
    return 0;
}
