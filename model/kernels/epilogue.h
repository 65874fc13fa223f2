// The AMX matmul's epilogue (model/kernels/matmul.h), run on each finished block of the output
// while it is in L1, as OpenVINO's post-ops are: bias, erf GELU and the rounding to bf16; and on
// each finished item of rows while it is in L2, the residual add and LayerNorm of a post-LN
// encoder. As XLA fusions between the custom calls these passes over [tokens, 3072] and
// [tokens, 768] cost half as much as the matmuls (docs/benchmarks.md, issue 22).
#pragma once
#include <immintrin.h>

#include <cmath>
#include <cstdint>

namespace koedu {

using bf16 = uint16_t;

enum Activation : int32_t { kIdentity = 0, kGelu = 1 };

struct Epilogue {
  const float* bias;  // N values, or null
  Activation activation;
};

// erf by the rational approximation of Eigen's fast erf (x clamped to [-4, 4], where fp32 erf
// is +-1): max error 4e-7 against erf in float64, beside XLA's 3e-7; GELU's output is rounded
// to bf16 (steps of 2^-8) before it is used.
static inline __m512 erf_ps(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-4.f)), _mm512_set1_ps(4.f));
  const __m512 x2 = _mm512_mul_ps(x, x);
  __m512 p = _mm512_set1_ps(-2.72614225801306e-10f);
  for (float c : {2.77068142495902e-08f, -2.10102402082508e-06f, -5.69250639462346e-05f,
                  -7.34990630326855e-04f, -2.95459980854025e-03f, -1.60960333262415e-02f})
    p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(c));
  __m512 q = _mm512_set1_ps(-1.45660718464996e-05f);
  for (float c : {-2.13374055278905e-04f, -1.68282697438203e-03f, -7.37332916720468e-03f,
                  -1.42647390514189e-02f})
    q = _mm512_fmadd_ps(q, x2, _mm512_set1_ps(c));
  // 1 / q by rcp14 and one Newton step (23 bits): a division would be the epilogue's costliest op.
  __m512 r = _mm512_rcp14_ps(q);
  r = _mm512_mul_ps(r, _mm512_fnmadd_ps(q, r, _mm512_set1_ps(2.f)));
  return _mm512_mul_ps(_mm512_mul_ps(p, x), r);
}

// jax.nn.gelu(approximate=False): x * (erf(x / sqrt(2)) + 1) / 2.
static inline __m512 gelu_ps(__m512 x) {
  const __m512 e = erf_ps(_mm512_mul_ps(x, _mm512_set1_ps(0.70710678118654752f)));
  return _mm512_mul_ps(_mm512_mul_ps(x, _mm512_add_ps(e, _mm512_set1_ps(1.f))), _mm512_set1_ps(0.5f));
}

static inline void store16(float* out, __m512 x) { _mm512_storeu_ps(out, x); }
static inline void store16(bf16* out, __m512 x) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), (__m256i)_mm512_cvtneps_pbh(x));
}

// C[32 x 32 at c] = act(acc + bias[32 at bias]), acc fp32 with row stride acc_stride.
template <typename Out>
static inline void finish(const float* acc, int64_t acc_stride, Out* c, int64_t c_stride,
                          const float* bias, Activation activation) {
  const __m512 b0 = bias ? _mm512_loadu_ps(bias) : _mm512_setzero_ps();
  const __m512 b1 = bias ? _mm512_loadu_ps(bias + 16) : _mm512_setzero_ps();
  for (int r = 0; r < 32; ++r) {
    __m512 x0 = _mm512_add_ps(_mm512_loadu_ps(acc + r * acc_stride), b0);
    __m512 x1 = _mm512_add_ps(_mm512_loadu_ps(acc + r * acc_stride + 16), b1);
    if (activation == kGelu) {
      x0 = gelu_ps(x0);
      x1 = gelu_ps(x1);
    }
    store16(c + r * c_stride, x0);
    store16(c + r * c_stride + 16, x1);
  }
}


// LayerNorm of (c + residual) in place, each row of n (a multiple of 16) values: flax's
// nnx.LayerNorm with the two-pass variance, (v - mean) * (rsqrt(var + eps) * scale) + bias.
struct Norm {
  const float* residual;  // (rows, n), or null for no LayerNorm
  const float* scale;
  const float* bias;
  float eps;
};

static inline void add_norm_rows(float* c, int64_t n, int64_t rows, const Norm& norm) {
  for (int64_t r = 0; r < rows; ++r) {
    float* v = c + r * n;
    const float* res = norm.residual + r * n;
    __m512 total = _mm512_setzero_ps();
    for (int64_t j = 0; j < n; j += 16) {
      const __m512 x = _mm512_add_ps(_mm512_loadu_ps(v + j), _mm512_loadu_ps(res + j));
      _mm512_storeu_ps(v + j, x);
      total = _mm512_add_ps(total, x);
    }
    const __m512 mean = _mm512_set1_ps(_mm512_reduce_add_ps(total) / static_cast<float>(n));
    __m512 squares = _mm512_setzero_ps();
    for (int64_t j = 0; j < n; j += 16) {
      const __m512 d = _mm512_sub_ps(_mm512_loadu_ps(v + j), mean);
      squares = _mm512_fmadd_ps(d, d, squares);
    }
    const float variance = _mm512_reduce_add_ps(squares) / static_cast<float>(n);
    const __m512 inverse = _mm512_set1_ps(1.f / std::sqrt(variance + norm.eps));
    for (int64_t j = 0; j < n; j += 16) {
      const __m512 mul = _mm512_mul_ps(inverse, _mm512_loadu_ps(norm.scale + j));
      const __m512 d = _mm512_sub_ps(_mm512_loadu_ps(v + j), mean);
      _mm512_storeu_ps(v + j, _mm512_fmadd_ps(d, mul, _mm512_loadu_ps(norm.bias + j)));
    }
  }
}

// fp32 -> bf16, rounding to nearest even as XLA's convert: the matmul's A when XLA hands over
// fp32 activations (LayerNorm's output), converted per item of rows while they are in cache.
static inline void to_bf16_rows(const float* in, int64_t count, bf16* out) {
  int64_t i = 0;
  for (; i + 16 <= count; i += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i),
                        (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(in + i)));
  if (i < count) {
    const __mmask16 tail = static_cast<__mmask16>((1u << (count - i)) - 1);
    _mm256_mask_storeu_epi16(out + i, tail,
                             (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(tail, in + i)));
  }
}

}  // namespace koedu
