/*
 * families.h — what the converter knows about each supported family: how its
 * config.json maps to moe_hparams, and how its Hugging Face tensor names map
 * to our canonical tensors. This is the only family-specific code there is;
 * the runtime sees hyperparameters only.
 */
#ifndef MOE_CONVERT_FAMILIES_H
#define MOE_CONVERT_FAMILIES_H

#include <stddef.h>

#include "model/model.h"

typedef struct moe_family moe_family;

/* Parses config.json text into hp. Errors name the file and the field. */
/* Reads config.json into hp. Also what only the converter needs: the FP8
 * block edge of quantization_config (128 when absent) and DeepSeek's
 * num_nextn_predict_layers (0 when absent). */
const moe_family *moe_family_from_config(const char *config_path, const char *text, moe_hparams *hp, int *fp8_block,
                                         int *n_mtp_layers, moe_error *err);

/* Hugging Face names of a layer tensor and of an expert tensor. */
void moe_family_layer_name(const moe_family *f, char *buf, size_t n, int layer, moe_layer_tensor t);
void moe_family_expert_name(const moe_family *f, char *buf, size_t n, int layer, int expert, moe_expert_tensor t);

/* Comma-separated model_type values this build converts (for messages). */
const char *moe_family_list(void);

#endif
