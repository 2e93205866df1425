/* Evaluation data sets: readers for the shipped formats, prompts as
 * lm-evaluation-harness builds them (see docs/eval.md for each task). */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "host/eval.h"

static const char *task_names[WD_EVAL_N_TASKS] = {
    "hellaswag", "mmlu", "arc_easy", "arc_challenge", "piqa", "winogrande", "gsm8k", "perplexity"};

const char *wd_eval_task_name(wd_eval_task t) {
    return t >= 0 && t < WD_EVAL_N_TASKS ? task_names[t] : "?";
}

int wd_eval_task_parse(const char *name, wd_eval_task *t) {
    static const struct {
        const char *alias;
        wd_eval_task task;
    } aliases[] = {{"arc-easy", WD_EVAL_ARC_EASY},           {"arc_e", WD_EVAL_ARC_EASY},
                   {"arc-challenge", WD_EVAL_ARC_CHALLENGE}, {"arc_c", WD_EVAL_ARC_CHALLENGE},
                   {"ppl", WD_EVAL_PERPLEXITY}};
    for (int i = 0; i < WD_EVAL_N_TASKS; i++)
        if (!strcmp(name, task_names[i])) {
            *t = (wd_eval_task)i;
            return 0;
        }
    for (size_t i = 0; i < sizeof(aliases) / sizeof(aliases[0]); i++)
        if (!strcmp(name, aliases[i].alias)) {
            *t = aliases[i].task;
            return 0;
        }
    return 1;
}

int wd_eval_task_is_mc(wd_eval_task t) { return t <= WD_EVAL_WINOGRANDE; }

/* ---- small helpers -------------------------------------------------------------- */
static char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* printf into a malloc'd string */
static char *xprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#include <stdarg.h>
static char *xprintf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0) s = NULL;
    va_end(ap);
    return s;
}

/* Whole file, NUL-terminated. */
static int read_file(const char *path, char **out, size_t *len, char *err, size_t errlen) {
    int fd = wd_input_open(path, WD_MAX_JSON_INPUT, err, errlen);
    FILE *f = fd < 0 ? NULL : fdopen(fd, "rb");
    if (!f) {
        if (fd >= 0) close(fd), snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return 1;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    for (;;) {
        if (!buf) {
            fclose(f);
            snprintf(err, errlen, "%s: out of memory", path);
            return 1;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (n < cap) break;
        cap *= 2;
        char *nb = realloc(buf, cap + 1);
        if (!nb) free(buf);
        buf = nb;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        snprintf(err, errlen, "%s: read error", path);
        return 1;
    }
    buf[n] = 0;
    if (strlen(buf) != n) {
        free(buf);
        snprintf(err, errlen, "%s: contains a NUL byte (not a text file)", path);
        return 1;
    }
    *out = buf;
    *len = n;
    return 0;
}

static void item_free(wd_eval_item *it) {
    free(it->context);
    for (int c = 0; c < it->n_choices; c++) {
        if (it->cont) free(it->cont[c]);
        if (it->alt_context) free(it->alt_context[c]);
    }
    free(it->cont);
    free(it->alt_context);
    free(it->norm_len);
    free(it->target);
    free(it->answer);
    memset(it, 0, sizeof(*it));
}

void wd_eval_set_free(wd_eval_set *set) {
    if (!set) return;
    for (int i = 0; i < set->n_items; i++) item_free(&set->items[i]);
    free(set->items);
    for (int i = 0; i < set->n_prefixes; i++) free(set->prefixes[i]);
    free(set->prefixes);
    for (int i = 0; i < set->n_groups; i++) free(set->groups[i]);
    free(set->groups);
    free(set->text);
    memset(set, 0, sizeof(*set));
}

static wd_eval_item *new_item(wd_eval_set *set, int n_choices) {
    if (set->n_items == set->cap) {
        int cap = set->cap ? 2 * set->cap : 256;
        wd_eval_item *ni = realloc(set->items, (size_t)cap * sizeof(*ni));
        if (!ni) return NULL;
        set->items = ni;
        set->cap = cap;
    }
    wd_eval_item *it = &set->items[set->n_items];
    memset(it, 0, sizeof(*it));
    it->prefix = -1;
    if (n_choices > 0) {
        it->cont = calloc((size_t)n_choices, sizeof(char *));
        it->norm_len = calloc((size_t)n_choices, sizeof(int));
        if (!it->cont || !it->norm_len) {
            free(it->cont);
            free(it->norm_len);
            return NULL;
        }
    }
    it->n_choices = n_choices;
    set->n_items++;
    return it;
}

/* choice c of item: continuation " " + text, acc_norm length = bytes of text */
static int set_choice(wd_eval_item *it, int c, const char *text) {
    it->cont[c] = xprintf(" %s", text);
    it->norm_len[c] = (int)strlen(text);
    return it->cont[c] == NULL;
}

static int add_string(char ***arr, int *n, const char *s) {
    char **na = realloc(*arr, (size_t)(*n + 1) * sizeof(char *));
    if (!na) return -1;
    *arr = na;
    if (!(na[*n] = xstrdup(s))) return -1;
    return (*n)++;
}

/* ---- HellaSwag (llama.cpp's format) ------------------------------------------------
 * 6 lines per task: context, gold index (0-3), 4 endings. lm-evaluation-harness
 * scores " " + ending after the context (llama.cpp's file holds the
 * preprocessed context "activity_label: ctx"). */
static int load_hellaswag(wd_eval_set *set, char *text, char *err, size_t errlen) {
    char *p = text;
    long line_no = 0;
    char *lines[6];
    for (;;) {
        /* skip blank lines between tasks (and at the end) */
        while (*p == '\n' || *p == '\r') {
            line_no++;
            p++;
        }
        if (!*p) break;
        long first = line_no + 1;
        for (int k = 0; k < 6; k++) {
            if (!*p) {
                snprintf(err, errlen,
                         "%s: line %ld: task starting at line %ld is incomplete (need 6 lines: "
                         "context, gold index, 4 endings)",
                         set->path, line_no, first);
                return 1;
            }
            lines[k] = p;
            char *nl = strchr(p, '\n');
            if (nl) {
                *nl = 0;
                p = nl + 1;
            } else {
                p += strlen(p);
            }
            size_t l = strlen(lines[k]);
            if (l && lines[k][l - 1] == '\r') lines[k][l - 1] = 0;
            line_no++;
        }
        char *end;
        long gold = strtol(lines[1], &end, 10);
        if (end == lines[1] || *end || gold < 0 || gold > 3) {
            snprintf(err, errlen, "%s: line %ld: gold index must be 0..3, got '%.40s'", set->path,
                     first + 1, lines[1]);
            return 1;
        }
        wd_eval_item *it = new_item(set, 4);
        if (!it || !(it->context = xstrdup(lines[0]))) goto oom;
        it->gold = (int)gold;
        for (int c = 0; c < 4; c++)
            if (set_choice(it, c, lines[2 + c])) goto oom;
    }
    if (!set->n_items) {
        snprintf(err, errlen, "%s: no tasks", set->path);
        return 1;
    }
    return 0;
oom:
    snprintf(err, errlen, "%s: out of memory", set->path);
    return 1;
}

/* ---- CSV (RFC 4180: quoted fields, "" escapes, newlines inside quotes) ------------ */
typedef struct {
    char **f;
    int n, cap;
} csv_row;

/* Parse one record starting at *p (modified in place); returns 0 at end of
 * input, 1 with a record, -1 on error (unterminated quote). */
static int csv_next(char **p, csv_row *row, long *line) {
    char *s = *p;
    row->n = 0;
    if (!*s) return 0;
    for (;;) {
        if (row->n == row->cap) {
            int cap = row->cap ? 2 * row->cap : 8;
            char **nf = realloc(row->f, (size_t)cap * sizeof(char *));
            if (!nf) return -1;
            row->f = nf;
            row->cap = cap;
        }
        char *out = s, *start = s;
        if (*s == '"') {
            s++;
            for (;;) {
                if (!*s) return -1;
                if (*s == '"') {
                    if (s[1] == '"') {
                        *out++ = '"';
                        s += 2;
                        continue;
                    }
                    s++;
                    break;
                }
                if (*s == '\n') (*line)++;
                *out++ = *s++;
            }
            /* anything up to the separator after the closing quote is kept */
            while (*s && *s != ',' && *s != '\n' && *s != '\r') *out++ = *s++;
        } else {
            while (*s && *s != ',' && *s != '\n' && *s != '\r') *out++ = *s++;
        }
        char sep = *s;
        if (sep == '\r' && s[1] == '\n') s++;
        *out = 0;
        row->f[row->n++] = start;
        if (sep == ',') {
            s++;
            continue;
        }
        if (sep) s++; /* (*s may be the terminator just written) */
        (*line)++;
        break;
    }
    *p = s;
    return 1;
}

static int parse_answer(const char *a) {
    while (isspace((unsigned char)*a)) a++;
    if (a[0] >= 'A' && a[0] <= 'D' && (!a[1] || isspace((unsigned char)a[1]))) return a[0] - 'A';
    char *end;
    long v = strtol(a, &end, 10);
    while (isspace((unsigned char)*end)) end++;
    if (end == a || *end || v < 0 || v > 3) return -1;
    return (int)v;
}

/* Rows of an MMLU CSV: question, 4 choices, answer (index 0-3 or letter).
 * cb is called for each row; a header row "question,..." is skipped. */
typedef int (*mmlu_row_fn)(void *ctx, char **f);
static int read_mmlu_csv(const char *path, mmlu_row_fn cb, void *ctx, long *rows, char *err,
                         size_t errlen) {
    char *text;
    size_t len;
    if (read_file(path, &text, &len, err, errlen)) return 1;
    char *p = text;
    if (len >= 3 && (unsigned char)p[0] == 0xEF && (unsigned char)p[1] == 0xBB &&
        (unsigned char)p[2] == 0xBF)
        p += 3;
    csv_row row = {0};
    long line = 1, n = 0;
    int rc = 0;
    for (;;) {
        long at = line;
        int got = csv_next(&p, &row, &line);
        if (got == 0) break;
        if (got < 0) {
            snprintf(err, errlen, "%s: line %ld: unterminated quoted field (or out of memory)",
                     path, at);
            rc = 1;
            break;
        }
        if (row.n == 1 && !row.f[0][0]) continue; /* blank line */
        if (row.n != 6) {
            snprintf(err, errlen,
                     "%s: line %ld: %d fields, expected 6 (question,choice0..3,answer)", path, at,
                     row.n);
            rc = 1;
            break;
        }
        if (n == 0 && !strcmp(row.f[0], "question") && !strcmp(row.f[5], "answer")) continue;
        if (parse_answer(row.f[5]) < 0) {
            snprintf(err, errlen, "%s: line %ld: answer must be 0..3 or A..D, got '%.20s'", path,
                     at, row.f[5]);
            rc = 1;
            break;
        }
        if (cb(ctx, row.f)) {
            snprintf(err, errlen, "%s: out of memory", path);
            rc = 1;
            break;
        }
        n++;
    }
    free(row.f);
    free(text);
    if (!rc && n == 0) {
        snprintf(err, errlen, "%s: no questions", path);
        rc = 1;
    }
    if (rows) *rows = n;
    return rc;
}

static char *strip_dup(const char *s) {
    while (isspace((unsigned char)*s)) s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1])) n--;
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = 0;
    }
    return d;
}

/* lm-evaluation-harness mmlu: "{question.strip()}\nA. {c0}\nB. {c1}\nC. {c2}\nD. {c3}\nAnswer:" */
static char *mmlu_question(char **f) {
    char *q = strip_dup(f[0]);
    if (!q) return NULL;
    char *s = xprintf("%s\nA. %s\nB. %s\nC. %s\nD. %s\nAnswer:", q, f[1], f[2], f[3], f[4]);
    free(q);
    return s;
}

typedef struct {
    char *buf;
    size_t len;
    int shots, taken, oom;
} mmlu_dev;

static int mmlu_dev_row(void *ctx, char **f) {
    mmlu_dev *d = ctx;
    if (d->taken >= d->shots) return 0;
    char *q = mmlu_question(f);
    char *shot = q ? xprintf("%s %c\n\n", q, 'A' + parse_answer(f[5])) : NULL;
    free(q);
    if (!shot) return 1;
    size_t l = strlen(shot);
    char *nb = realloc(d->buf, d->len + l + 1);
    if (!nb) {
        free(shot);
        return 1;
    }
    memcpy(nb + d->len, shot, l + 1);
    d->buf = nb;
    d->len += l;
    free(shot);
    d->taken++;
    return 0;
}

typedef struct {
    wd_eval_set *set;
    int prefix, group;
} mmlu_test;

static int mmlu_test_row(void *ctx, char **f) {
    mmlu_test *t = ctx;
    wd_eval_item *it = new_item(t->set, 4);
    if (!it) return 1;
    it->prefix = t->prefix;
    it->group = t->group;
    it->gold = parse_answer(f[5]);
    if (!(it->context = mmlu_question(f))) return 1;
    for (int c = 0; c < 4; c++) {
        char letter[2] = {(char)('A' + c), 0};
        if (set_choice(it, c, letter)) return 1;
    }
    return 0;
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

/* One subject: test file + (shots > 0) its dev file. */
static int load_mmlu_subject(wd_eval_set *set, const char *test_path, const char *dev_path,
                             const char *subject, char *err, size_t errlen) {
    char pretty[256];
    snprintf(pretty, sizeof(pretty), "%s", subject);
    for (char *c = pretty; *c; c++)
        if (*c == '_') *c = ' ';
    int group = add_string(&set->groups, &set->n_groups, subject);
    if (group < 0) goto oom;
    mmlu_dev dev = {0};
    dev.shots = set->shots;
    dev.buf = xprintf("The following are multiple choice questions (with answers) about %s.\n\n",
                      pretty);
    if (!dev.buf) goto oom;
    dev.len = strlen(dev.buf);
    if (set->shots > 0) {
        struct stat st;
        if (stat(dev_path, &st) != 0) {
            snprintf(err, errlen, "%s: no dev split %s for the %d-shot prompt (--shots 0 for "
                     "zero-shot)", test_path, dev_path, set->shots);
            free(dev.buf);
            return 1;
        }
        if (read_mmlu_csv(dev_path, mmlu_dev_row, &dev, NULL, err, errlen)) {
            free(dev.buf);
            return 1;
        }
        if (dev.taken < set->shots) {
            snprintf(err, errlen, "%s: %d dev questions, %d-shot needs %d", dev_path, dev.taken,
                     set->shots, set->shots);
            free(dev.buf);
            return 1;
        }
    }
    char **np = realloc(set->prefixes, (size_t)(set->n_prefixes + 1) * sizeof(char *));
    if (!np) {
        free(dev.buf);
        goto oom;
    }
    set->prefixes = np;
    np[set->n_prefixes] = dev.buf;
    mmlu_test t = {set, set->n_prefixes++, group};
    return read_mmlu_csv(test_path, mmlu_test_row, &t, NULL, err, errlen);
oom:
    snprintf(err, errlen, "%s: out of memory", test_path);
    return 1;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int load_mmlu(wd_eval_set *set, char *err, size_t errlen) {
    struct stat st;
    if (stat(set->path, &st) != 0) {
        snprintf(err, errlen, "%s: %s", set->path, strerror(errno));
        return 1;
    }
    char test_path[2048], dev_path[2048], subject[256];
    if (!S_ISDIR(st.st_mode)) {
        /* one test file: <dir>/test/<subject>_test.csv, dev at <dir>/dev/<subject>_dev.csv */
        const char *base = strrchr(set->path, '/');
        base = base ? base + 1 : set->path;
        size_t bl = strlen(base);
        if (ends_with(base, "_test.csv"))
            bl -= 9;
        else if (ends_with(base, ".csv"))
            bl -= 4;
        snprintf(subject, sizeof(subject), "%.*s", (int)bl, base);
        size_t dl = (size_t)(base - set->path);
        snprintf(dev_path, sizeof(dev_path), "%.*s../dev/%s_dev.csv", (int)dl, set->path,
                 subject);
        if (dl == 0) snprintf(dev_path, sizeof(dev_path), "../dev/%s_dev.csv", subject);
        return load_mmlu_subject(set, set->path, dev_path, subject, err, errlen);
    }
    snprintf(test_path, sizeof(test_path), "%s/test", set->path);
    DIR *d = opendir(test_path);
    if (!d) {
        snprintf(err, errlen, "%s: no test/ folder (expected MMLU dev/ and test/ with "
                              "<subject>_test.csv)", set->path);
        return 1;
    }
    char **names = NULL;
    int n = 0, rc = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!ends_with(e->d_name, "_test.csv")) continue;
        if (add_string(&names, &n, e->d_name) < 0) {
            rc = 1;
            snprintf(err, errlen, "%s: out of memory", set->path);
            break;
        }
    }
    closedir(d);
    if (!rc && !n) {
        snprintf(err, errlen, "%s/test: no <subject>_test.csv files", set->path);
        rc = 1;
    }
    if (!rc) qsort(names, (size_t)n, sizeof(char *), cmp_str);
    for (int i = 0; i < n && !rc; i++) {
        size_t bl = strlen(names[i]) - 9;
        snprintf(subject, sizeof(subject), "%.*s", (int)bl, names[i]);
        snprintf(test_path, sizeof(test_path), "%s/test/%s", set->path, names[i]);
        snprintf(dev_path, sizeof(dev_path), "%s/dev/%s_dev.csv", set->path, subject);
        rc = load_mmlu_subject(set, test_path, dev_path, subject, err, errlen);
    }
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    return rc;
}

/* ---- JSON lines ----------------------------------------------------------------- */
static int json_str(json_object *o, const char *key, const char **out) {
    json_object *v;
    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
        return 1;
    *out = json_object_get_string(v);
    return 0;
}

/* {"question", "choices": [...], "answer": index} as ARC, PIQA, WinoGrande. */
static int jsonl_mc_item(wd_eval_set *set, json_object *o, long line, char *err,
                         size_t errlen) {
    const char *q;
    json_object *ch, *ans;
    if (json_str(o, "question", &q)) {
        snprintf(err, errlen, "%s: line %ld: missing string \"question\"", set->path, line);
        return 1;
    }
    if (!json_object_object_get_ex(o, "choices", &ch) ||
        !json_object_is_type(ch, json_type_array) || json_object_array_length(ch) < 2) {
        snprintf(err, errlen, "%s: line %ld: \"choices\" must be an array of at least 2 strings",
                 set->path, line);
        return 1;
    }
    int n = (int)json_object_array_length(ch);
    for (int c = 0; c < n; c++)
        if (!json_object_is_type(json_object_array_get_idx(ch, c), json_type_string)) {
            snprintf(err, errlen, "%s: line %ld: choice %d is not a string", set->path, line, c);
            return 1;
        }
    if (!json_object_object_get_ex(o, "answer", &ans) || !json_object_is_type(ans, json_type_int) ||
        json_object_get_int64(ans) < 0 || json_object_get_int64(ans) >= n) {
        snprintf(err, errlen, "%s: line %ld: \"answer\" must be an integer index in [0, %d)",
                 set->path, line, n);
        return 1;
    }
    wd_eval_item *it = new_item(set, n);
    if (!it) goto oom;
    it->gold = (int)json_object_get_int64(ans);
    if (set->task == WD_EVAL_WINOGRANDE) {
        /* lm-evaluation-harness "partial evaluation": the choice fills the blank in
         * the context; the scored continuation is the text after the blank. */
        const char *blank = strchr(q, '_');
        if (!blank || strchr(blank + 1, '_')) {
            snprintf(err, errlen, "%s: line %ld: the sentence must hold exactly one '_' blank",
                     set->path, line);
            set->n_items--;
            item_free(it);
            return 1;
        }
        if (!(it->alt_context = calloc((size_t)n, sizeof(char *)))) goto oom;
        char *after = strip_dup(blank + 1);
        if (!after) goto oom;
        if (!*after) {
            free(after);
            snprintf(err, errlen, "%s: line %ld: nothing after the blank to score", set->path,
                     line);
            return 1;
        }
        for (int c = 0; c < n; c++) {
            const char *opt = json_object_get_string(json_object_array_get_idx(ch, c));
            it->alt_context[c] = xprintf("%.*s%s", (int)(blank - q), q, opt);
            it->cont[c] = xprintf(" %s", after);
            it->norm_len[c] = (int)strlen(after);
            if (!it->alt_context[c] || !it->cont[c]) {
                free(after);
                goto oom;
            }
        }
        free(after);
        if (!(it->context = xstrdup(""))) goto oom;
    } else {
        /* ARC, PIQA: "Question: {question}\nAnswer:" + " {choice}" */
        if (!(it->context = xprintf("Question: %s\nAnswer:", q))) goto oom;
        for (int c = 0; c < n; c++)
            if (set_choice(it, c, json_object_get_string(json_object_array_get_idx(ch, c))))
                goto oom;
    }
    return 0;
oom:
    snprintf(err, errlen, "%s: out of memory", set->path);
    return 1;
}

static void normalise_number(const char *s, size_t n, char *out, size_t cap) {
    size_t k = 0;
    for (size_t i = 0; i < n && k + 1 < cap; i++)
        if (s[i] != ',' && s[i] != '$' && !isspace((unsigned char)s[i])) out[k++] = s[i];
    while (k && out[k - 1] == '.') k--;
    out[k] = 0;
}

void wd_eval_gsm8k_extract(const char *text, char *out, size_t cap) {
    out[0] = 0;
    const char *hash = strstr(text, "####");
    if (hash) {
        /* strict: "#### (-?[0-9.,]+)" (a '$' is tolerated) */
        const char *s = hash + 4;
        while (*s == ' ' || *s == '$') s++;
        const char *e = s;
        if (*e == '-') e++;
        int digits = 0;
        while (isdigit((unsigned char)*e) || *e == '.' || *e == ',') digits += isdigit((unsigned char)*e++) != 0;
        if (digits) {
            normalise_number(s, (size_t)(e - s), out, cap);
            return;
        }
    }
    /* flexible: the last number in the text */
    const char *best = NULL, *best_end = NULL;
    for (const char *s = text; *s;) {
        if (isdigit((unsigned char)*s)) {
            const char *b = s;
            while (b > text && (b[-1] == '$')) b--;
            if (b > text && b[-1] == '-') b--;
            const char *e = s;
            while (isdigit((unsigned char)*e) || ((*e == '.' || *e == ',') &&
                                                   isdigit((unsigned char)e[1])))
                e++;
            best = b;
            best_end = e;
            s = e;
        } else {
            s++;
        }
    }
    if (best) {
        normalise_number(best, (size_t)(best_end - best), out, cap);
    }
}

static int jsonl_gsm8k_item(wd_eval_set *set, json_object *o, long line, char *err,
                            size_t errlen) {
    const char *q, *a;
    if (json_str(o, "question", &q) || json_str(o, "answer", &a)) {
        snprintf(err, errlen, "%s: line %ld: need strings \"question\" and \"answer\"", set->path,
                 line);
        return 1;
    }
    if (!strstr(a, "####")) {
        snprintf(err, errlen, "%s: line %ld: the answer has no final \"#### N\"", set->path,
                 line);
        return 1;
    }
    char num[128];
    wd_eval_gsm8k_extract(a, num, sizeof(num));
    if (!num[0]) {
        snprintf(err, errlen, "%s: line %ld: no number after \"####\"", set->path, line);
        return 1;
    }
    wd_eval_item *it = new_item(set, 0);
    if (!it) goto oom;
    /* lm-evaluation-harness gsm8k: "Question: {question}\nAnswer:" */
    it->context = xprintf("Question: %s\nAnswer:", q);
    it->target = xstrdup(num);
    it->answer = xstrdup(a); /* the full reference answer, for few-shot prompts */
    if (!it->context || !it->target || !it->answer) goto oom;
    return 0;
oom:
    snprintf(err, errlen, "%s: out of memory", set->path);
    return 1;
}

static int load_jsonl(wd_eval_set *set, char *text, char *err, size_t errlen) {
    char *p = text;
    long line = 0;
    json_tokener *tk = json_tokener_new();
    if (!tk) {
        snprintf(err, errlen, "%s: out of memory", set->path);
        return 1;
    }
    int rc = 0;
    while (*p && !rc) {
        line++;
        char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        char *next = nl ? nl + 1 : p + len;
        size_t k = 0;
        while (k < len && isspace((unsigned char)p[k])) k++;
        if (k == len) {
            p = next;
            continue;
        }
        json_tokener_reset(tk);
        json_object *o = json_tokener_parse_ex(tk, p, (int)len);
        enum json_tokener_error je = json_tokener_get_error(tk);
        if (!o || je != json_tokener_success) {
            snprintf(err, errlen, "%s: line %ld: malformed JSON: %s", set->path, line,
                     o ? "trailing data" : json_tokener_error_desc(je));
            json_object_put(o);
            rc = 1;
            break;
        }
        /* anything but whitespace after the object? */
        size_t used = json_tokener_get_parse_end(tk);
        for (size_t i = used; i < len; i++)
            if (!isspace((unsigned char)p[i])) {
                snprintf(err, errlen, "%s: line %ld: trailing data after the JSON object",
                         set->path, line);
                rc = 1;
                break;
            }
        if (!rc && !json_object_is_type(o, json_type_object)) {
            snprintf(err, errlen, "%s: line %ld: expected a JSON object", set->path, line);
            rc = 1;
        }
        if (!rc)
            rc = set->task == WD_EVAL_GSM8K ? jsonl_gsm8k_item(set, o, line, err, errlen)
                                            : jsonl_mc_item(set, o, line, err, errlen);
        json_object_put(o);
        p = next;
    }
    json_tokener_free(tk);
    if (!rc && !set->n_items) {
        snprintf(err, errlen, "%s: no items", set->path);
        rc = 1;
    }
    return rc;
}

/* GSM8K few-shot: the first `shots` items become exemplars
 * "Question: q\nAnswer: <reference answer>\n\n" and are not evaluated. */
static int gsm8k_fewshot(wd_eval_set *set, char *err, size_t errlen) {
    if (set->shots <= 0) return 0;
    if (set->shots >= set->n_items) {
        snprintf(err, errlen, "%s: %d items, %d-shot needs more than %d", set->path,
                 set->n_items, set->shots, set->shots);
        return 1;
    }
    size_t len = 0;
    char *buf = xstrdup("");
    for (int i = 0; i < set->shots && buf; i++) {
        char *shot = xprintf("%s %s\n\n", set->items[i].context, set->items[i].answer);
        if (!shot) {
            free(buf);
            buf = NULL;
            break;
        }
        size_t l = strlen(shot);
        char *nb = realloc(buf, len + l + 1);
        if (!nb) {
            free(buf);
            free(shot);
            buf = NULL;
            break;
        }
        memcpy(nb + len, shot, l + 1);
        len += l;
        buf = nb;
        free(shot);
    }
    if (!buf || add_string(&set->prefixes, &set->n_prefixes, buf) < 0) {
        free(buf);
        snprintf(err, errlen, "%s: out of memory", set->path);
        return 1;
    }
    free(buf);
    for (int i = 0; i < set->shots; i++) item_free(&set->items[i]);
    memmove(set->items, set->items + set->shots,
            (size_t)(set->n_items - set->shots) * sizeof(wd_eval_item));
    set->n_items -= set->shots;
    for (int i = 0; i < set->n_items; i++) set->items[i].prefix = 0;
    return 0;
}

int wd_eval_load(wd_eval_set *set, wd_eval_task task, const char *path, int shots, char *err,
                 size_t errlen) {
    memset(set, 0, sizeof(*set));
    set->task = task;
    snprintf(set->path, sizeof(set->path), "%s", path);
    if (shots < 0) shots = (task == WD_EVAL_MMLU || task == WD_EVAL_GSM8K) ? 5 : 0;
    if (shots > 0 && task != WD_EVAL_MMLU && task != WD_EVAL_GSM8K) {
        snprintf(err, errlen, "%s: few-shot prompts are supported for mmlu and gsm8k only", path);
        return 1;
    }
    set->shots = shots;
    int rc;
    if (task == WD_EVAL_MMLU) {
        rc = load_mmlu(set, err, errlen);
    } else {
        char *text;
        size_t len;
        if (read_file(path, &text, &len, err, errlen)) return 1;
        switch (task) {
        case WD_EVAL_HELLASWAG:
            rc = load_hellaswag(set, text, err, errlen);
            free(text);
            break;
        case WD_EVAL_PERPLEXITY:
            set->text = text;
            set->text_len = len;
            rc = 0;
            if (!len) {
                snprintf(err, errlen, "%s: empty text", path);
                rc = 1;
            }
            break;
        default:
            rc = load_jsonl(set, text, err, errlen);
            free(text);
            if (!rc && task == WD_EVAL_GSM8K) rc = gsm8k_fewshot(set, err, errlen);
            break;
        }
    }
    if (rc) wd_eval_set_free(set);
    return rc;
}
