/*
 * template.h — chat templates: a small Jinja interpreter that renders the
 * Hugging Face chat templates (tokenizer_config.json "chat_template", or
 * chat_template.jinja) byte-identically to @huggingface/jinja, the reference
 * implementation used by transformers.js.
 *
 * It follows the reference, not Python Jinja2, wherever the two differ: blocks
 * are parsed with trim_blocks and lstrip_blocks on, values behave like the
 * reference's JavaScript values (true prints "true", str.strip('x') ignores its
 * argument, lengths count UTF-16 units, == is JavaScript's loose equality).
 * A template that uses something outside the supported subset fails at parse
 * or render time with a message naming the construct and its line:column; it
 * never renders something different silently.
 *
 * A parsed template is immutable and may be rendered from several threads at
 * once; each render owns its memory and frees it before returning.
 */
#ifndef MOE_TEXT_TEMPLATE_H
#define MOE_TEXT_TEMPLATE_H

#include <stddef.h>

#include "moe.h"

typedef struct moe_template moe_template;

/* Parses a template; a syntax error names line:column in src. */
moe_template *moe_template_parse(const char *src, size_t len, moe_error *err);
void moe_template_free(moe_template *t);

typedef struct moe_chat_message {
    const char *role;
    const char *content; /* NULL renders as the template's `none` */
} moe_chat_message;

typedef struct moe_template_vars {
    const char *bos_token, *eos_token; /* NULL: not defined (as transformers.js does) */
    int add_generation_prompt;
    int enable_thinking;               /* -1: undefined, 0: false, 1: true (Qwen3) */
    long long now_unix;                /* the clock for strftime_now(), in local time */
} moe_template_vars;

/*
 * Renders with the variables transformers.js passes to apply_chat_template:
 * messages, add_generation_prompt, tools = none, documents = none, bos_token and
 * eos_token when set, and enable_thinking when not -1. *out is NUL-terminated,
 * *len excludes the NUL; free it with free(). A template that calls
 * raise_exception(msg) fails with msg in the error.
 */
int moe_template_render(const moe_template *t, const moe_chat_message *msgs, int n,
                        const moe_template_vars *v, char **out, size_t *len, moe_error *err);

/*
 * The same, with every variable given as one JSON object, e.g.
 * {"messages": [...], "add_generation_prompt": true, "tools": [...]}: for
 * messages that carry tool_calls, reasoning_content or thinking, and for
 * templates that read other variables. Numbers that are whole become integers,
 * as in the reference.
 */
int moe_template_render_json(const moe_template *t, const char *json, size_t json_len,
                             long long now_unix, char **out, size_t *len, moe_error *err);

#endif
