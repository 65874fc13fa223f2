// Self-attention of one (row, head) at a time, fused: scores, softmax and the weighted sum of
// values for a block of queries stay in L1/L2 and never reach memory. fp32, AVX-512F.
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
#include <vector>

namespace koedu {

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
struct Scratch {
  int64_t stride;
  std::vector<float> kt, v, q, scores;
  std::vector<int32_t> segments;
  std::vector<int64_t> first, last;
  explicit Scratch(const Shape& s)
      : stride(s.padded_length()), kt(s.head_dim * stride), v(stride * kMaxHeadDim),
        q(kQueries * s.head_dim), scores(kQueries * stride), segments(stride), first(s.length),
        last(s.length) {}
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

// Softmax of one query's scores over the keys of its own segment, in place; returns 1 / sum.
static inline float masked_softmax(float* scores, const int32_t* segments, int32_t segment,
                                   int64_t begin, int64_t end) {
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
    _mm512_storeu_ps(scores + j, p);
    total = _mm512_add_ps(total, p);
  }
  return 1.f / _mm512_reduce_add_ps(total);
}

// out[i] = inverse_sum[i] * sum_j weights[i, j] v[j] over keys [begin, end); DV vectors of 16.
template <int MR, int DV>
static inline void weights_value(const float* weights, const Scratch& w, int64_t begin, int64_t end,
                                 const float* inverse_sum, int64_t head_dim, float* out,
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
  const __mmask16 tail = static_cast<__mmask16>((1u << (head_dim - 16 * (DV - 1))) - 1);
  for (int i = 0; i < MR; ++i) {
    __m512 scale = _mm512_set1_ps(inverse_sum[i]);
    for (int c = 0; c < DV; ++c)
      _mm512_mask_storeu_ps(out + i * out_stride + 16 * c, c + 1 < DV ? 0xffff : tail,
                            _mm512_mul_ps(acc[i][c], scale));
  }
}

template <int MR>
static void query_block(const float* qkv, float* out, const Shape& s, int64_t row, int64_t head,
                        int64_t i0, Scratch& w) {
  const int64_t hidden = s.heads * s.head_dim;
  const int32_t* segments = w.segments.data();
  int64_t begin = s.length, end = 0;
  for (int i = 0; i < MR; ++i) {
    if (segments[i0 + i] == 0) continue;
    begin = std::min(begin, w.first[i0 + i]);
    end = std::max(end, w.last[i0 + i] + 1);
  }
  float* o = out + (row * s.length + i0) * hidden + head * s.head_dim;
  if (begin >= end) {  // padding queries only
    for (int i = 0; i < MR; ++i) std::fill(o + i * hidden, o + i * hidden + s.head_dim, 0.f);
    return;
  }
  begin = begin / 16 * 16;
  end = (end + 15) / 16 * 16;
  // The same rounding as q * (1 / sqrt(head_dim)) in the compute dtype before the product.
  const float scale = 1.f / std::sqrt(static_cast<float>(s.head_dim));
  for (int i = 0; i < MR; ++i) {
    const float* q = qkv + (row * s.length + i0 + i) * 3 * hidden + head * s.head_dim;
    for (int64_t d = 0; d < s.head_dim; ++d) w.q[i * s.head_dim + d] = q[d] * scale;
  }
  query_key<MR>(w.q.data(), s.head_dim, w, begin, end, w.scores.data());
  float inverse_sum[MR];
  for (int i = 0; i < MR; ++i) {
    int32_t segment = segments[i0 + i];
    inverse_sum[i] = segment == 0 ? 0.f
        : masked_softmax(w.scores.data() + i * w.stride, segments, segment, begin, end);
  }
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
static inline void attend(const float* qkv, const int32_t* segment_ids, float* out, const Shape& s,
                          int64_t row, int64_t head, Scratch& w) {
  const int64_t hidden = s.heads * s.head_dim;
  const int32_t* segments = segment_ids + row * s.length;
  std::copy(segments, segments + s.length, w.segments.begin());  // the padded tail stays 0
  for (int64_t j = 0; j < s.length; ++j) {
    const float* k = qkv + ((row * s.length + j) * 3 + 1) * hidden + head * s.head_dim;
    for (int64_t d = 0; d < s.head_dim; ++d) w.kt[d * w.stride + j] = k[d];
    std::copy(k + hidden, k + hidden + s.head_dim, w.v.begin() + j * kMaxHeadDim);
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
