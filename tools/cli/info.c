/* info.c — `moe-cli info`: the model card, and --verify of every checksum. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const char *tensor_class(const char *name) {
    if (!strcmp(name, "token_embd")) return "embed";
    if (!strcmp(name, "output")) return "output";
    if (strstr(name, "_norm")) return "norms";
    if (strstr(name, ".exp.")) return "experts";
    if (strstr(name, ".shexp_router") || strstr(name, ".router")) return "router";
    if (strstr(name, ".shexp_")) return "shared experts";
    if (strstr(name, ".attn_")) return "attention";
    if (strstr(name, ".ffn_")) return "dense ffn";
    return "other";
}

static void print_dtypes(const moe_model *m) {
    static const char *const classes[] = {"embed", "attention", "router", "experts", "shared experts",
                                          "dense ffn", "norms", "output", "other"};
    for (size_t c = 0; c < sizeof classes / sizeof *classes; c++) {
        unsigned seen = 0;
        for (int i = 0; i < moe_model_n_tensors(m); i++) {
            moe_tensor_info t;
            moe_model_tensor(m, i, &t);
            if (!strcmp(tensor_class(t.name), classes[c])) seen |= 1u << t.dtype;
        }
        if (!seen) continue;
        printf("  %-15s", classes[c]);
        for (int d = 0; d < MOE_DTYPE_COUNT; d++)
            if (seen & (1u << d)) printf(" %s", moe_dtype_name((moe_dtype)d));
        printf("\n");
    }
}

static void on_bad_tensor(void *user, const char *name) {
    fprintf(stderr, "%s: checksum mismatch in tensor %s\n", (const char *)user, name);
}

int cmd_info(const cli_opts *o) {
    const char *path = o->model;
    const int verify = o->verify;
    moe_error err = {{0}};
    moe_model *m = moe_model_open(path, &err);
    if (!m) {
        fprintf(stderr, "moe-cli: %s\n", err.msg);
        return 1;
    }
    const moe_hparams *hp = moe_model_hparams(m);
    uint64_t total, active;
    moe_model_param_counts(m, &total, &active);
    int n_moe = 0;
    for (int l = 0; l < hp->n_layers; l++) n_moe += hp->layer_is_moe[l];
    const char *s;
    printf("file:            %s (%.2f MiB)\n", path, moe_model_file_size(m) / 1048576.0);
    printf("family:          %s\n", hp->architecture);
    if ((s = moe_model_meta_str(m, "general.source"))) printf("source:          %s\n", s);
    if ((s = moe_model_meta_str(m, "general.converter"))) printf("converter:       %s\n", s);
    if ((s = moe_model_meta_str(m, "general.recipe"))) printf("recipe:          %s\n", s);
    printf("layers:          %d (%d MoE, %d dense)\n", hp->n_layers, n_moe, hp->n_layers - n_moe);
    printf("hidden size:     %d\n", hp->n_embd);
    printf("attention:       %d heads, %d kv heads, head dim %d%s%s\n", hp->n_heads, hp->n_kv_heads, hp->head_dim,
           hp->qk_norm == MOE_QK_NORM_PER_HEAD ? ", q/k norm per head"
           : hp->qk_norm == MOE_QK_NORM_FULL   ? ", q/k norm over the projection" : "",
           hp->attn_bias ? ", qkv bias" : "");
    if (hp->attn_kind == MOE_ATTN_MLA)
        printf("latent attn:     kv_lora_rank %d, q_lora_rank %d, nope %d + rope %d per head, v %d\n", hp->kv_lora_rank,
               hp->q_lora_rank, hp->qk_nope_dim, hp->qk_rope_dim, hp->v_head_dim);
    printf("KV cache:        %llu bytes per token (f16; %llu with --kv-type f32)\n",
           (unsigned long long)moe_model_kv_values_per_token(m) * 2, (unsigned long long)moe_model_kv_values_per_token(m) * 4);
    printf("vocabulary:      %d\n", hp->n_vocab);
    printf("context (train): %d, rope theta %g%s\n", hp->n_ctx_train, hp->rope_theta,
           hp->rope_scaling == MOE_ROPE_YARN ? ", YaRN" : hp->rope_scaling == MOE_ROPE_LINEAR ? ", linear scaling" : "");
    printf("experts:         %d, %d per token, width %d%s\n", hp->n_experts, hp->n_experts_used, hp->expert_ffn,
           hp->norm_topk ? ", top-k renormalized" : "");
    printf("routing:         %s%s", hp->router_func == MOE_ROUTER_SIGMOID ? "sigmoid" : "softmax",
           hp->router_bias ? " + correction bias" : "");
    if (hp->n_groups > 1) printf(", best %d of %d groups", hp->topk_groups, hp->n_groups);
    if (hp->routed_scale != 1.0f) printf(", weights x %g", hp->routed_scale);
    printf("\n");
    if (hp->shared_ffn) printf("shared experts:  width %d%s\n", hp->shared_ffn, hp->shared_gate ? ", sigmoid-gated" : "");
    else printf("shared experts:  0\n");
    printf("parameters:      %.3f M total, %.3f M active per token\n", total / 1e6, active / 1e6);
    const char *tok = moe_model_meta_str(m, "tokenizer.hf_json"), *tmpl = moe_model_meta_str(m, "tokenizer.chat_template");
    printf("tokenizer:       %s\n", tok ? "from tokenizer.json" : "none (token ids only)");
    printf("chat template:   %s\n", tmpl ? "yes" : "none");
    printf("tensors:         %d\n", moe_model_n_tensors(m));
    for (int i = 0; o->tensors && i < moe_model_n_tensors(m); i++) {
        moe_tensor_info t;
        moe_model_tensor(m, i, &t);
        printf("  %-40s %-4s [", t.name, moe_dtype_name(t.dtype));
        for (int d = t.n_dims - 1; d >= 0; d--) printf("%lld%s", (long long)t.dims[d], d ? ", " : "");
        printf("] %llu bytes\n", (unsigned long long)t.size);
    }
    printf("dtypes:\n");
    print_dtypes(m);
    int rc = 0;
    if (verify) {
        int bad = moe_model_verify(m, on_bad_tensor, (void *)path);
        if (bad) {
            fprintf(stderr, "moe-cli: %s: %d tensor%s failed verification\n", path, bad, bad == 1 ? "" : "s");
            rc = 1;
        } else {
            printf("verify:          all %d tensor checksums match\n", moe_model_n_tensors(m));
        }
    }
    moe_model_close(m);
    return rc;
}
