/*
 * chat.c — the model's chat template applied to a conversation: the template
 * and the special-token strings it needs come from the files the converter
 * stored (tokenizer.chat_template, tokenizer_config.json), the variables are
 * those transformers.js passes to the template.
 */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"
#include "template.h"
#include "tokenizer.h"
#include "util/error.h"

/* A special token in tokenizer_config.json: "<s>" or {"content": "<s>", ...}. */
static cJSON *token_string(const cJSON *config, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(config, key);
    if (cJSON_IsObject(v)) v = cJSON_GetObjectItemCaseSensitive(v, "content");
    return cJSON_IsString(v) ? cJSON_CreateString(v->valuestring) : NULL;
}

/* Plain ChatML (Qwen's framing without tools) and Mistral's [INST] framing. */
static const char CHATML[] =
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}";
static const char MISTRAL[] =
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'user' %}{{- '[INST] ' + message['content'] + ' [/INST]' }}"
    "{%- elif message['role'] == 'system' %}{{- '[INST] ' + message['content'] + ' [/INST]' }}"
    "{%- else %}{{- message['content'] + eos_token }}{%- endif %}"
    "{%- endfor %}";

const char *moe_chat_template_builtin(const char *name) {
    if (!strcmp(name, "chatml")) return CHATML;
    if (!strcmp(name, "mistral")) return MISTRAL;
    return NULL;
}

int moe_chat_render(const moe_model *m, const char *chat_template, const char *messages_json, size_t len,
                    int add_generation_prompt, int enable_thinking, long long now_unix, char **out, size_t *out_len,
                    moe_error *err) {
    size_t tlen = chat_template ? strlen(chat_template) : 0, clen = 0;
    const uint8_t *tsrc = chat_template ? (const uint8_t *)chat_template
                                        : moef_meta_bytes(&m->file, "tokenizer.chat_template", &tlen);
    const uint8_t *csrc = moef_meta_bytes(&m->file, "tokenizer.hf_config", &clen);
    if (!tsrc)
        return moe_fail(err, "%s: the model has no chat template (--chat-template chatml|mistral|FILE gives one)",
                        m->file.path);
    cJSON *messages = cJSON_ParseWithLength(messages_json, len);
    if (!cJSON_IsArray(messages)) {
        cJSON_Delete(messages);
        return moe_fail(err, "messages: not a JSON list of {\"role\", \"content\"} objects");
    }
    for (const cJSON *msg = messages->child; msg; msg = msg->next)
        if (!cJSON_IsObject(msg) || !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(msg, "role"))) {
            cJSON_Delete(messages);
            return moe_fail(err, "messages: every message needs a \"role\" string");
        }
    cJSON *vars = cJSON_CreateObject(), *config = csrc ? cJSON_ParseWithLength((const char *)csrc, clen) : NULL;
    cJSON_AddItemToObject(vars, "messages", messages);
    cJSON_AddBoolToObject(vars, "add_generation_prompt", add_generation_prompt);
    cJSON_AddNullToObject(vars, "tools");
    cJSON_AddNullToObject(vars, "documents");
    cJSON *bos = config ? token_string(config, "bos_token") : NULL, *eos = config ? token_string(config, "eos_token") : NULL;
    if (bos) cJSON_AddItemToObject(vars, "bos_token", bos);
    if (eos) cJSON_AddItemToObject(vars, "eos_token", eos);
    if (enable_thinking >= 0) cJSON_AddBoolToObject(vars, "enable_thinking", enable_thinking);
    cJSON_Delete(config);
    char *json = cJSON_PrintUnformatted(vars);
    cJSON_Delete(vars);
    if (!json) return moe_fail(err, "out of memory");
    int rc = -1;
    moe_template *t = moe_template_parse((const char *)tsrc, tlen, err);
    if (t) rc = moe_template_render_json(t, json, strlen(json), now_unix, out, out_len, err);
    moe_template_free(t);
    free(json);
    return rc;
}

moe_tokenizer *moe_model_tokenizer_new(const moe_model *m, moe_error *err) {
    size_t len = 0, clen = 0;
    const uint8_t *json = moef_meta_bytes(&m->file, "tokenizer.hf_json", &len);
    const uint8_t *config = moef_meta_bytes(&m->file, "tokenizer.hf_config", &clen);
    if (!json) {
        moe_fail(err, "%s: the model has no tokenizer (it was converted without tokenizer.json)", m->file.path);
        return NULL;
    }
    moe_tokenizer *t = moe_tokenizer_from_hf((const char *)json, len, (const char *)config, config ? clen : 0, err);
    if (!t) moe_fail_prefix(err, "%s: tokenizer: ", m->file.path);
    return t;
}
