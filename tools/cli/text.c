/* text.c — `moe-cli tokenize`, `detokenize` and `render`: the model's
 * tokenizer and chat template, without running the model. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "text/tokenizer.h"
#include "util/file.h"

/* ---- tokenize / detokenize ---- */

static void print_ids(const moe_tokenizer *t, const int32_t *ids, int n, int pieces) {
    if (pieces) {
        for (int i = 0; i < n; i++) {
            size_t len = 0;
            const char *piece = moe_tokenizer_piece(t, ids[i], &len);
            cJSON *str = cJSON_CreateString(piece ? piece : "");
            char *json = cJSON_PrintUnformatted(str);
            printf("%d\t%s\n", ids[i], json ? json : "\"\"");
            free(json);
            cJSON_Delete(str);
        }
        return;
    }
    printf("[");
    for (int i = 0; i < n; i++) printf("%s%d", i ? ", " : "", ids[i]);
    printf("]\n");
}

static int encode_print(const moe_tokenizer *t, const char *text, size_t len, const cli_opts *o, moe_error *err) {
    int32_t *ids = NULL;
    int n = 0;
    if (moe_tokenizer_encode(t, text, len, !o->no_special, &ids, &n, err)) return -1;
    print_ids(t, ids, n, o->pieces);
    free(ids);
    return 0;
}

int cmd_tokenize(const cli_opts *o) {
    moe_error err = {{0}};
    moe_model *m = moe_model_open(o->model, &err);
    moe_tokenizer *t = m ? moe_model_tokenizer_new(m, &err) : NULL;
    int rc = t ? 0 : 1;
    if (t && o->jsonl) {
        char *line = NULL;
        size_t cap = 0;
        ssize_t k;
        for (int lineno = 1; !rc && (k = getline(&line, &cap, stdin)) > 0; lineno++) {
            cJSON *s = cJSON_ParseWithLength(line, (size_t)k);
            if (!cJSON_IsString(s)) {
                snprintf(err.msg, sizeof err.msg, "stdin line %d: not a JSON string", lineno);
                rc = 1;
            } else if (encode_print(t, s->valuestring, strlen(s->valuestring), o, &err)) {
                rc = 1;
            }
            cJSON_Delete(s);
        }
        free(line);
    } else if (t) {
        if (!o->text) {
            snprintf(err.msg, sizeof err.msg, "tokenize: give the TEXT, or --jsonl to read JSON strings from stdin");
            rc = 2;
        } else if (encode_print(t, o->text, strlen(o->text), o, &err)) {
            rc = 1;
        }
    }
    if (rc) fprintf(stderr, "moe-cli: %s\n", err.msg);
    moe_tokenizer_free(t);
    moe_model_close(m);
    return rc;
}

int cmd_detokenize(const cli_opts *o) {
    moe_error err = {{0}};
    int32_t *ids = NULL;
    int n = 0;
    if (!o->tokens || cli_parse_tokens(o->tokens, &ids, &n)) {
        if (!o->tokens) fprintf(stderr, "moe-cli detokenize: --tokens is required\n");
        return 2;
    }
    moe_model *m = moe_model_open(o->model, &err);
    moe_tokenizer *t = m ? moe_model_tokenizer_new(m, &err) : NULL;
    char *text = NULL;
    size_t len = 0;
    int rc = !t || moe_tokenizer_decode(t, ids, n, o->skip_special, &text, &len, &err) ? 1 : 0;
    if (rc) fprintf(stderr, "moe-cli: %s\n", err.msg);
    else fwrite(text, 1, len, stdout);
    free(text);
    free(ids);
    moe_tokenizer_free(t);
    moe_model_close(m);
    return rc;
}

/* ---- render ---- */

int cmd_render(const cli_opts *o) {
    if (!o->messages) {
        fprintf(stderr, "moe-cli render: --messages CONV.json is required\n");
        return 2;
    }
    moe_error err = {{0}};
    size_t len = 0, out_len = 0;
    char *out = NULL, *tmpl = NULL, *json = moe_read_file(o->messages, &len, &err);
    moe_model *m = json ? moe_model_open(o->model, &err) : NULL;
    int rc = !m || cli_chat_template(o, &tmpl, &err) ||
             moe_chat_render(m, tmpl, json, len, o->add_generation_prompt, o->thinking,
                             o->now >= 0 ? o->now : (long long)time(NULL), &out, &out_len, &err);
    if (rc) fprintf(stderr, "moe-cli: %s\n", err.msg);
    else fwrite(out, 1, out_len, stdout);
    free(out);
    free(tmpl);
    free(json);
    moe_model_close(m);
    return rc;
}
