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
const moe_family *moe_family_from_config(const char *config_path, const char *text, moe_hparams *hp,
                                         moe_error *err);

/* Hugging Face names of a layer tensor and of an expert tensor. */
void moe_family_layer_name(const moe_family *f, char *buf, size_t n, int layer, moe_layer_tensor t);
void moe_family_expert_name(const moe_family *f, char *buf, size_t n, int layer, int expert, moe_expert_tensor t);

/* Comma-separated model_type values this build converts (for messages). */
const char *moe_family_list(void);

#endif
