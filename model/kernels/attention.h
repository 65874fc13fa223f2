// Self-attention of one (row, head) at a time, fused: scores, softmax and the weighted sum of
// values for a block of queries stay in L1/L2 and never reach memory. fp32 or bf16 in and out,
// fp32 softmax and accumulation, AVX-512F; for bf16 with AVX512-BF16 (compiled with
// -mavx512bf16) the two products are bf16 dot products (vdpbf16ps) over pairs of elements, the
// softmax weights rounded to bf16 before the product with V as XLA's bf16 attention rounds them;
// without it bf16 is widened to fp32 and takes the fp32 path. Builds with AMX run bf16 on tiles
// instead (attention_amx.h), with the same roundings.
//
// Layout, as model/xlmr.py holds it: qkv (rows, length, 3, heads, head_dim), segment ids
// (rows, length) with 0 for padding, out (rows, length, heads, head_dim). A query attends to
// the keys of its own segment; keys outside the span of the block's segments are never
// computed, so packed rows pay only for their own documents. Padding queries get zeros
// (their outputs are never read).
#pragma once
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <unordered_map>
#include <utility>
#include <cstring>
#include <type_traits>
#include <vector>

namespace koedu {

using bf16_t = uint16_t;

static inline float widen(float x) { return x; }
static inline float widen(bf16_t x) {
  uint32_t bits = static_cast<uint32_t>(x) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// fp32 -> bf16, rounding to nearest even (what XLA's convert and vcvtneps2bf16 do); NaN stays NaN.
static inline bf16_t to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<bf16_t>((bits >> 16) | 0x40);
  return static_cast<bf16_t>((bits + 0x7fffu + ((bits >> 16) & 1)) >> 16);
}

static inline void narrow(float x, float* out) { *out = x; }
static inline void narrow(float x, bf16_t* out) { *out = to_bf16(x); }

constexpr int kMaxHeadDim = 64;  // 4 zmm registers per value row
constexpr int kQueries = 6;      // queries per block: 6 x 4 accumulators + loads fit 32 registers

struct Shape {
  int64_t rows, length, heads, head_dim;
  int64_t padded_length() const { return (length + 15) / 16 * 16; }
  int64_t value_vectors() const { return (head_dim + 15) / 16; }
};

// e^x for x <= 0 as 2^n * 2^f, |f| <= 1/2, 2^f by its degree-6 Taylor polynomial: relative
// error about 1.2e-7, a float's own rounding.
static inline __m512 exp_nonpositive(__m512 x) {
  __m512 t = _mm512_max_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                           _mm512_set1_ps(-150.f));
  __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 f = _mm512_sub_ps(t, n);
  __m512 p = _mm512_set1_ps(1.54035303933816e-4f);
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.33335581464284e-3f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.61812910762848e-3f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.55041086648216e-2f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.40226506959101e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.93147180559945e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f));
  return _mm512_scalef_ps(p, n);
}

// What one thread reuses across items: K transposed (head_dim, padded length), V packed
// (padded length, 64), the row's segment ids padded with 0, a block of queries and scores.
// The bf16 path keeps pairs of bf16 in 32-bit words, the layout of vdpbf16ps's operands:
// K transposed by pairs of dimensions (head_dim / 2, padded length), V by pairs of keys
// (padded length / 2, 64), the queries' pairs, and the softmax weights rounded to bf16.
struct Scratch {
  int64_t stride, pairs;
  std::vector<float> kt, v, q, scores;
  std::vector<uint32_t> kt2, v2, q2;
  std::vector<bf16_t> weights;
  std::vector<int32_t> segments;
  std::vector<int64_t> first, last;
  Scratch(const Shape& s, bool pairs_layout)
      : stride(s.padded_length()), pairs((s.head_dim + 1) / 2), scores(kQueries * stride),
        segments(stride), first(s.length), last(s.length) {
    if (pairs_layout) {
      kt2.resize(pairs * stride);
      v2.resize(stride / 2 * kMaxHeadDim);
      q2.resize(kQueries * pairs);
      weights.resize(kQueries * stride);
    } else {
      kt.resize(s.head_dim * stride);
      v.resize(stride * kMaxHeadDim);
      q.resize(kQueries * s.head_dim);
    }
  }
};

// scores[i, j] = q[i] . k[j] for keys [begin, end), both multiples of 16.
template <int MR>
static inline void query_key(const float* q, int64_t head_dim, const Scratch& w, int64_t begin,
                             int64_t end, float* scores) {
  const int64_t stride = w.stride;
  int64_t j = begin;
  for (; j + 64 <= end; j += 64) {
    __m512 acc[MR][4];
    for (int i = 0; i < MR; ++i)
      for (int c = 0; c < 4; ++c) acc[i][c] = _mm512_setzero_ps();
    for (int64_t d = 0; d < head_dim; ++d) {
      const float* k = w.kt.data() + d * stride + j;
      __m512 k0 = _mm512_loadu_ps(k), k1 = _mm512_loadu_ps(k + 16), k2 = _mm512_loadu_ps(k + 32),
             k3 = _mm512_loadu_ps(k + 48);
      for (int i = 0; i < MR; ++i) {
        __m512 b = _mm512_set1_ps(q[i * head_dim + d]);
        acc[i][0] = _mm512_fmadd_ps(b, k0, acc[i][0]);
        acc[i][1] = _mm512_fmadd_ps(b, k1, acc[i][1]);
        acc[i][2] = _mm512_fmadd_ps(b, k2, acc[i][2]);
        acc[i][3] = _mm512_fmadd_ps(b, k3, acc[i][3]);
      }
    }
    for (int i = 0; i < MR; ++i)
      for (int c = 0; c < 4; ++c) _mm512_storeu_ps(scores + i * stride + j + 16 * c, acc[i][c]);
  }
  for (; j < end; j += 16) {
    __m512 acc[MR];
    for (int i = 0; i < MR; ++i) acc[i] = _mm512_setzero_ps();
    for (int64_t d = 0; d < head_dim; ++d) {
      __m512 k = _mm512_loadu_ps(w.kt.data() + d * stride + j);
      for (int i = 0; i < MR; ++i) acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(q[i * head_dim + d]), k, acc[i]);
    }
    for (int i = 0; i < MR; ++i) _mm512_storeu_ps(scores + i * stride + j, acc[i]);
  }
}

static inline void store_weights(float* out, __m512 p) { _mm512_storeu_ps(out, p); }
#ifdef __AVX512BF16__
static inline void store_weights(bf16_t* out, __m512 p) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), (__m256i)_mm512_cvtneps_pbh(p));
}
#endif

// Softmax of one query's scores over the keys of its own segment into `weights` (0 for other
// keys): in place in fp32, or rounded to bf16 for the AMX product with V. Returns 1 / the sum
// of the unrounded weights.
template <typename W>
static inline float masked_softmax(const float* scores, const int32_t* segments, int32_t segment,
                                   int64_t begin, int64_t end, W* weights) {
  const __m512i own = _mm512_set1_epi32(segment);
  __m512 best = _mm512_set1_ps(-INFINITY);
  for (int64_t j = begin; j < end; j += 16) {
    __mmask16 m = _mm512_cmpeq_epi32_mask(_mm512_loadu_si512(segments + j), own);
    best = _mm512_mask_max_ps(best, m, best, _mm512_loadu_ps(scores + j));
  }
  const __m512 top = _mm512_set1_ps(_mm512_reduce_max_ps(best));
  __m512 total = _mm512_setzero_ps();
  for (int64_t j = begin; j < end; j += 16) {
    __mmask16 m = _mm512_cmpeq_epi32_mask(_mm512_loadu_si512(segments + j), own);
    __m512 p = _mm512_maskz_mov_ps(m, exp_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(scores + j), top)));
    store_weights(weights + j, p);
    total = _mm512_add_ps(total, p);
  }
  return 1.f / _mm512_reduce_add_ps(total);
}

// out[i] = inverse_sum[i] * sum_j weights[i, j] v[j] over keys [begin, end); DV vectors of 16.
// Stores head_dim values of `acc` (DV vectors) at `out`, rounding to bf16 where out is bf16.
template <int DV>
static inline void store_row(const __m512* acc, __m512 scale, int64_t head_dim, float* out) {
  const __mmask16 tail = static_cast<__mmask16>((1u << (head_dim - 16 * (DV - 1))) - 1);
  for (int c = 0; c < DV; ++c)
    _mm512_mask_storeu_ps(out + 16 * c, c + 1 < DV ? 0xffff : tail, _mm512_mul_ps(acc[c], scale));
}
template <int DV>
static inline void store_row(const __m512* acc, __m512 scale, int64_t head_dim, bf16_t* out) {
  alignas(64) float row[16 * DV];
  for (int c = 0; c < DV; ++c) _mm512_store_ps(row + 16 * c, _mm512_mul_ps(acc[c], scale));
  for (int64_t d = 0; d < head_dim; ++d) out[d] = to_bf16(row[d]);
}

template <int MR, int DV, typename T>
static inline void weights_value(const float* weights, const Scratch& w, int64_t begin, int64_t end,
                                 const float* inverse_sum, int64_t head_dim, T* out,
                                 int64_t out_stride) {
  __m512 acc[MR][DV];
  for (int i = 0; i < MR; ++i)
    for (int c = 0; c < DV; ++c) acc[i][c] = _mm512_setzero_ps();
  for (int64_t j = begin; j < end; ++j) {
    __m512 v[DV];
    for (int c = 0; c < DV; ++c) v[c] = _mm512_loadu_ps(w.v.data() + j * kMaxHeadDim + 16 * c);
    for (int i = 0; i < MR; ++i) {
      __m512 b = _mm512_set1_ps(weights[i * w.stride + j]);
      for (int c = 0; c < DV; ++c) acc[i][c] = _mm512_fmadd_ps(b, v[c], acc[i][c]);
    }
  }
  for (int i = 0; i < MR; ++i)
    store_row<DV>(acc[i], _mm512_set1_ps(inverse_sum[i]), head_dim, out + i * out_stride);
}

#ifdef __AVX512BF16__
// scores[i, j] = q[i] . k[j] for keys [begin, end), by pairs of dimensions.
template <int MR>
static inline void query_key_pairs(const Scratch& w, int64_t begin, int64_t end, float* scores) {
  const int64_t stride = w.stride, pairs = w.pairs;
  const uint32_t* q = w.q2.data();
  int64_t j = begin;
  for (; j + 64 <= end; j += 64) {
    __m512 acc[MR][4];
    for (int i = 0; i < MR; ++i)
      for (int c = 0; c < 4; ++c) acc[i][c] = _mm512_setzero_ps();
    for (int64_t p = 0; p < pairs; ++p) {
      const uint32_t* k = w.kt2.data() + p * stride + j;
      __m512bh k0 = (__m512bh)_mm512_loadu_si512(k), k1 = (__m512bh)_mm512_loadu_si512(k + 16),
               k2 = (__m512bh)_mm512_loadu_si512(k + 32), k3 = (__m512bh)_mm512_loadu_si512(k + 48);
      for (int i = 0; i < MR; ++i) {
        __m512bh b = (__m512bh)_mm512_set1_epi32(static_cast<int>(q[i * pairs + p]));
        acc[i][0] = _mm512_dpbf16_ps(acc[i][0], k0, b);
        acc[i][1] = _mm512_dpbf16_ps(acc[i][1], k1, b);
        acc[i][2] = _mm512_dpbf16_ps(acc[i][2], k2, b);
        acc[i][3] = _mm512_dpbf16_ps(acc[i][3], k3, b);
      }
    }
    for (int i = 0; i < MR; ++i)
      for (int c = 0; c < 4; ++c) _mm512_storeu_ps(scores + i * stride + j + 16 * c, acc[i][c]);
  }
  for (; j < end; j += 16) {
    __m512 acc[MR];
    for (int i = 0; i < MR; ++i) acc[i] = _mm512_setzero_ps();
    for (int64_t p = 0; p < pairs; ++p) {
      __m512bh k = (__m512bh)_mm512_loadu_si512(w.kt2.data() + p * stride + j);
      for (int i = 0; i < MR; ++i)
        acc[i] = _mm512_dpbf16_ps(acc[i], k, (__m512bh)_mm512_set1_epi32(static_cast<int>(q[i * pairs + p])));
    }
    for (int i = 0; i < MR; ++i) _mm512_storeu_ps(scores + i * stride + j, acc[i]);
  }
}

// out[i] = inverse_sum[i] * sum_j weights[i, j] v[j] over keys [begin, end), by pairs of keys;
// the weights rounded to bf16 first.
template <int MR, int DV>
static inline void weights_value_pairs(Scratch& w, int64_t begin, int64_t end, const float* inverse_sum,
                                       int64_t head_dim, bf16_t* out, int64_t out_stride) {
  for (int i = 0; i < MR; ++i)
    for (int64_t j = begin; j < end; j += 16)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(w.weights.data() + i * w.stride + j),
                          (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(w.scores.data() + i * w.stride + j)));
  const uint32_t* weight_pairs = reinterpret_cast<const uint32_t*>(w.weights.data());
  __m512 acc[MR][DV];
  for (int i = 0; i < MR; ++i)
    for (int c = 0; c < DV; ++c) acc[i][c] = _mm512_setzero_ps();
  for (int64_t jp = begin / 2; jp < end / 2; ++jp) {
    __m512bh v[DV];
    for (int c = 0; c < DV; ++c) v[c] = (__m512bh)_mm512_loadu_si512(w.v2.data() + jp * kMaxHeadDim + 16 * c);
    for (int i = 0; i < MR; ++i) {
      __m512bh b = (__m512bh)_mm512_set1_epi32(static_cast<int>(weight_pairs[i * w.stride / 2 + jp]));
      for (int c = 0; c < DV; ++c) acc[i][c] = _mm512_dpbf16_ps(acc[i][c], v[c], b);
    }
  }
  for (int i = 0; i < MR; ++i)
    store_row<DV>(acc[i], _mm512_set1_ps(inverse_sum[i]), head_dim, out + i * out_stride);
}
#endif

// The pair layout (vdpbf16ps) runs bf16 where the CPU has it; everything else computes in fp32.
template <typename T>
constexpr bool uses_pairs() {
#ifdef __AVX512BF16__
  return std::is_same_v<T, bf16_t>;
#else
  return false;
#endif
}

// Keys [begin, end) that queries i0 .. i0 + rows - 1 may see (begin >= end: all are padding).
template <typename W>
static inline void block_key_span(const W& w, int64_t i0, int64_t rows, int64_t length,
                                  int64_t& begin, int64_t& end) {
  begin = length, end = 0;
  for (int64_t i = 0; i < rows; ++i) {
    if (w.segments[i0 + i] == 0) continue;
    begin = std::min(begin, w.first[i0 + i]);
    end = std::max(end, w.last[i0 + i] + 1);
  }
}

template <int MR, typename T>
static void query_block(const T* qkv, T* out, const Shape& s, int64_t row, int64_t head,
                        int64_t i0, Scratch& w) {
  const int64_t hidden = s.heads * s.head_dim;
  const int32_t* segments = w.segments.data();
  int64_t begin, end;
  block_key_span(w, i0, MR, s.length, begin, end);
  T* o = out + (row * s.length + i0) * hidden + head * s.head_dim;
  if (begin >= end) {  // padding queries only
    for (int i = 0; i < MR; ++i) std::fill(o + i * hidden, o + i * hidden + s.head_dim, T(0));
    return;
  }
  begin = begin / 16 * 16;
  end = (end + 15) / 16 * 16;
  // The same rounding as q * (1 / sqrt(head_dim)) in the compute dtype before the product.
  float scale = 1.f / std::sqrt(static_cast<float>(s.head_dim));
  if constexpr (std::is_same_v<T, bf16_t>) scale = widen(to_bf16(scale));
  for (int i = 0; i < MR; ++i) {
    const T* q = qkv + (row * s.length + i0 + i) * 3 * hidden + head * s.head_dim;
    if constexpr (uses_pairs<T>()) {
      for (int64_t p = 0; p < w.pairs; ++p) {
        const uint32_t low = to_bf16(widen(q[2 * p]) * scale);
        const uint32_t high = 2 * p + 1 < s.head_dim ? to_bf16(widen(q[2 * p + 1]) * scale) : 0;
        w.q2[i * w.pairs + p] = low | high << 16;
      }
    } else if constexpr (std::is_same_v<T, bf16_t>) {
      for (int64_t d = 0; d < s.head_dim; ++d) w.q[i * s.head_dim + d] = widen(to_bf16(widen(q[d]) * scale));
    } else {
      for (int64_t d = 0; d < s.head_dim; ++d) w.q[i * s.head_dim + d] = q[d] * scale;
    }
  }
#ifdef __AVX512BF16__
  if constexpr (uses_pairs<T>()) query_key_pairs<MR>(w, begin, end, w.scores.data());
  else
#endif
  query_key<MR>(w.q.data(), s.head_dim, w, begin, end, w.scores.data());
  float inverse_sum[MR];
  for (int i = 0; i < MR; ++i) {
    int32_t segment = segments[i0 + i];
    inverse_sum[i] = segment == 0 ? 0.f
        : masked_softmax(w.scores.data() + i * w.stride, segments, segment, begin, end,
                         w.scores.data() + i * w.stride);
  }
#ifdef __AVX512BF16__
  if constexpr (uses_pairs<T>()) {
    switch (s.value_vectors()) {
      case 1: weights_value_pairs<MR, 1>(w, begin, end, inverse_sum, s.head_dim, o, hidden); break;
      case 2: weights_value_pairs<MR, 2>(w, begin, end, inverse_sum, s.head_dim, o, hidden); break;
      case 3: weights_value_pairs<MR, 3>(w, begin, end, inverse_sum, s.head_dim, o, hidden); break;
      default: weights_value_pairs<MR, 4>(w, begin, end, inverse_sum, s.head_dim, o, hidden);
    }
    return;
  }
#endif
  switch (s.value_vectors()) {
    case 1: weights_value<MR, 1>(w.scores.data(), w, begin, end, inverse_sum, s.head_dim, o, hidden); break;
    case 2: weights_value<MR, 2>(w.scores.data(), w, begin, end, inverse_sum, s.head_dim, o, hidden); break;
    case 3: weights_value<MR, 3>(w.scores.data(), w, begin, end, inverse_sum, s.head_dim, o, hidden); break;
    default: weights_value<MR, 4>(w.scores.data(), w, begin, end, inverse_sum, s.head_dim, o, hidden);
  }
}

// Each key's segment spans [first, last]: ids need not be contiguous runs, though packed rows
// make them so.
static inline void segment_spans(const int32_t* segments, int64_t length, Scratch& w) {
  std::unordered_map<int32_t, std::pair<int64_t, int64_t>> spans;
  for (int64_t j = 0; j < length; ++j) {
    auto found = spans.try_emplace(segments[j], j, j);
    found.first->second.second = j;
  }
  for (int64_t j = 0; j < length; ++j) {
    const auto& span = spans[segments[j]];
    w.first[j] = span.first;
    w.last[j] = span.second;
  }
}

// Attention of one (row, head). Requires head_dim <= 64.
template <typename T>
static inline void attend(const T* qkv, const int32_t* segment_ids, T* out, const Shape& s,
                          int64_t row, int64_t head, Scratch& w) {
  const int64_t hidden = s.heads * s.head_dim;
  const int32_t* segments = segment_ids + row * s.length;
  std::copy(segments, segments + s.length, w.segments.begin());  // the padded tail stays 0
  for (int64_t j = 0; j < s.length; ++j) {
    const T* k = qkv + ((row * s.length + j) * 3 + 1) * hidden + head * s.head_dim;
    const T* v = k + hidden;
    if constexpr (uses_pairs<T>()) {
      // Halves of 32-bit words: dimensions (2p, 2p + 1) of key j; keys (2jp, 2jp + 1) of value c.
      auto* kt = reinterpret_cast<bf16_t*>(w.kt2.data());
      auto* vv = reinterpret_cast<bf16_t*>(w.v2.data());
      for (int64_t d = 0; d < s.head_dim; ++d) {
        kt[2 * ((d / 2) * w.stride + j) + d % 2] = k[d];
        vv[2 * ((j / 2) * kMaxHeadDim + d) + j % 2] = v[d];
      }
    } else {
      for (int64_t d = 0; d < s.head_dim; ++d) {
        w.kt[d * w.stride + j] = widen(k[d]);
        w.v[j * kMaxHeadDim + d] = widen(v[d]);
      }
    }
  }
  segment_spans(segments, s.length, w);
  int64_t i0 = 0;
  for (; i0 + kQueries <= s.length; i0 += kQueries) query_block<kQueries>(qkv, out, s, row, head, i0, w);
  switch (s.length - i0) {
    case 1: query_block<1>(qkv, out, s, row, head, i0, w); break;
    case 2: query_block<2>(qkv, out, s, row, head, i0, w); break;
    case 3: query_block<3>(qkv, out, s, row, head, i0, w); break;
    case 4: query_block<4>(qkv, out, s, row, head, i0, w); break;
    case 5: query_block<5>(qkv, out, s, row, head, i0, w); break;
  }
}

}  // namespace koedu
