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

#endif
