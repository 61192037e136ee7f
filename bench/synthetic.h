/*
 * synthetic.h — random-weight models with the shapes of real ones, so anyone
 * can benchmark without downloading weights. The file is written once into a
 * cache folder and reused.
 */
#ifndef MOE_BENCH_SYNTHETIC_H
#define MOE_BENCH_SYNTHETIC_H

#include "model/model.h"

/* Fills hp with the shapes of a named model ("olmoe-1b-7b", ...); n_layers
 * overrides the layer count when > 0. -1 with err for an unknown name. */
int moe_synthetic_hparams(const char *name, int n_layers, moe_hparams *hp, moe_error *err);
/* The names moe_synthetic_hparams knows, comma-separated. */
const char *moe_synthetic_names(void);

/* Writes a random-weight model with hp's shapes and recipe to path. */
int moe_synthetic_write(const char *path, const moe_hparams *hp, const moe_recipe *recipe, const char *name,
                        moe_error *err);

/* The same with skewed routing when skew > 0, as trained models route (random
 * weights route about uniformly): each layer's router favours its experts by
 * a Zipf-like law, expert of random rank r getting a logit bias of
 * -skew * ln(r), and tokens fall into topics (contiguous id ranges) that
 * favour one expert in 8, so a token stream that stays in a topic routes
 * alike from token to token. The embedding is stored in f16 (not q4/q8) so
 * the lanes carrying this are exact. See synthetic.c for the mechanism. */
int moe_synthetic_write_skewed(const char *path, const moe_hparams *hp, const moe_recipe *recipe, const char *name,
                               double skew, moe_error *err);

#endif
