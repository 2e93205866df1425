/* Chat templates: the model's own (GGUF tokenizer.chat_template) decides the
 * format. Supported: ChatML, the template SmolLM2 and Qwen2 ship —
 *   <|im_start|>system\n{system}<|im_end|>\n     (when the template has a default)
 *   <|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n
 * The default system message is read out of the template's own text (the
 * literal after "<|im_start|>system" and a newline, up to "<|im_end|>"). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "weights/tokenizer_internal.h"

char *wd_tokenizer_apply_chat(const wd_tokenizer *t, const char *user, char *err, size_t errlen) {
    const char *tpl = t ? t->chat_template : NULL;
    if (!tpl) {
        snprintf(err, errlen, "the model has no chat template (tokenizer.chat_template)");
        return NULL;
    }
    if (!strstr(tpl, "<|im_start|>") || !strstr(tpl, "<|im_end|>")) {
        snprintf(err, errlen, "chat template (tokenizer.chat_template) is not ChatML "
                 "(<|im_start|>role ... <|im_end|>), the only kind supported");
        return NULL;
    }
    const char *sys = NULL;
    size_t sys_len = 0;
    /* the first "<|im_start|>system" followed by literal text (Qwen's templates
     * also have one followed by an expression: ' + messages[0]['content'] + ') */
    for (const char *p = strstr(tpl, "<|im_start|>system"); p && !sys;
         p = strstr(p, "<|im_start|>system")) {
        p += strlen("<|im_start|>system");
        int nl = *p == '\n' ? 1 : (p[0] == '\\' && p[1] == 'n') ? 2 : 0;
        const char *e = nl ? strstr(p + nl, "<|im_end|>") : NULL;
        size_t l = e ? (size_t)(e - p - nl) : 0;
        if (e && l && !memchr(p + nl, '\'', l) && !memchr(p + nl, '"', l) &&
            !memchr(p + nl, '{', l)) {
            sys = p + nl;
            sys_len = l;
        }
    }
    static const char *u0 = "<|im_start|>user\n", *u1 = "<|im_end|>\n<|im_start|>assistant\n";
    size_t n = strlen(user) + strlen(u0) + strlen(u1) + sys_len + 64;
    char *out = malloc(n);
    if (!out) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    size_t o = 0;
    if (sys) {
        o += (size_t)snprintf(out + o, n - o, "<|im_start|>system\n");
        for (size_t i = 0; i < sys_len; i++) { /* the template's \n escapes */
            if (sys[i] == '\\' && i + 1 < sys_len && sys[i + 1] == 'n') {
                out[o++] = '\n';
                i++;
            } else {
                out[o++] = sys[i];
            }
        }
        o += (size_t)snprintf(out + o, n - o, "<|im_end|>\n");
    }
    snprintf(out + o, n - o, "%s%s%s", u0, user, u1);
    return out;
}
