/*
 * kernels.h — the matrix products every layer runs on. THE hot code: nearly
 * all of the time of a forward pass is spent here. A weight is a row-major
 * matrix of any supported dtype; activations are float32.
 */
#ifndef MOE_KERNELS_H
#define MOE_KERNELS_H

#include "model/model.h"

/* y[t][r] = sum_c w[r][c] * x[t][c], for n_tok tokens: x is n_tok x w->cols,
 * y is n_tok x w->rows, both contiguous. Uses the threads of the caller's
 * OpenMP team when called inside one, else opens a parallel region. */
void moe_matmul(float *y, const moe_weight *w, const float *x, int n_tok);

/* One row of w as float32 (an embedding lookup). */
void moe_weight_row(const moe_weight *w, int64_t row, float *out);

/* Elementwise helpers of the forward pass. */
void moe_rmsnorm(float *out, const float *x, const float *weight, int n, float eps);
void moe_swiglu(float *gate_inout, const float *up, int64_t n); /* gate = silu(gate) * up */

#endif
