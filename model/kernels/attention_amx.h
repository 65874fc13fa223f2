// The bf16 attention of attention.h on Intel AMX tiles, for builds with -mamx-tile -mamx-bf16.
// vdpbf16ps left both products far below the AMX weight matmuls (attention was a third of the
// bf16 scorer's time for a tenth of its FLOPs), and the element-by-element copy of K and V into
// its pair layouts cost as much as either product.
//
// The same arithmetic as attention.h's bf16 path: q * scale rounded to bf16, fp32 scores and
// softmax, the unnormalised weights rounded to bf16 before the product with V, fp32 sums, the
// output scaled by 1 / sum and rounded to bf16. Per (row, head), K and V are laid out once as
// AMX B tiles by vector transposes; queries go in blocks of 16 (one tile of rows), keys in steps
// of 32 (one A tile of weights), so a block's key span is rounded out to 32 and the keys beyond
// the row's length are zeros.
#pragma once
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <utility>
#include <cstdlib>
#include <vector>

#include "attention.h"
#include "tiles.h"

namespace koedu {

constexpr int64_t kTileRows = 16;  // queries per block
constexpr int64_t kKeyStep = 32;   // keys per A tile of weights
constexpr int64_t kKeyWords = 512;  // per 16 keys: two 16 x 16 B tiles of dimension pairs

// One thread's buffers, reused across items. q: the scaled queries, 64 bf16 a row (zeros past
// head_dim). k: per 16 keys, two B tiles (dimensions 0-31, 32-63) of k[j] (2r, 2r + 1) at
// [r][j]. v: per pair of keys, 64 dimensions of (v[2r][c], v[2r + 1][c]). The segment ids and
// spans are the row's, kept while a thread's items stay on one row.
struct AmxScratch {
  int64_t length, stride, row = -1;
  TileBuffer<bf16_t> q, weights;
  TileBuffer<uint32_t> k, v;
  TileBuffer<float> scores, out;
  std::vector<int32_t> segments;
  std::vector<int64_t> first, last, table_first, table_last;
  explicit AmxScratch(const Shape& s)
      : length(s.length), stride((s.length + kKeyStep - 1) / kKeyStep * kKeyStep), q(stride * kMaxHeadDim),
        weights(kTileRows * stride), k(stride / 16 * kKeyWords), v(stride / 2 * kMaxHeadDim),
        scores(kTileRows * stride), out(kTileRows * kMaxHeadDim), segments(stride), first(s.length),
        last(s.length) {}
};

// This thread's scratch for rows of s.length, kept between calls: buffers this size come from
// mmap, and their pages would fault in again on every call.
inline AmxScratch* amx_scratch(const Shape& s) {
  thread_local std::unique_ptr<AmxScratch> kept;
  if (!kept || kept->length != s.length) kept = std::make_unique<AmxScratch>(s);
  kept->row = -1;  // another call's segment ids
  return kept.get();
}

// Each key's segment spans [first, last]. Packed rows number their documents from 1, so a
// table indexed by id does; other ids (negative or huge) go through a sort.
static inline void row_spans(const int32_t* ids, int64_t length, AmxScratch& w) {
  if (length == 0) return;
  const auto [lo, hi] = std::minmax_element(ids, ids + length);
  if (*lo >= 0 && *hi <= 2 * length + 64) {
    w.table_first.assign(*hi + 1, -1);
    w.table_last.resize(*hi + 1);
    for (int64_t j = 0; j < length; ++j) {
      if (w.table_first[ids[j]] < 0) w.table_first[ids[j]] = j;
      w.table_last[ids[j]] = j;
    }
    for (int64_t j = 0; j < length; ++j) {
      w.first[j] = w.table_first[ids[j]];
      w.last[j] = w.table_last[ids[j]];
    }
    return;
  }
  std::vector<std::pair<int32_t, int64_t>> order(length);
  for (int64_t j = 0; j < length; ++j) order[j] = {ids[j], j};
  std::sort(order.begin(), order.end());
  for (int64_t a = 0, b; a < length; a = b) {
    for (b = a; b < length && order[b].first == order[a].first;) ++b;
    for (int64_t i = a; i < b; ++i) {
      w.first[order[i].second] = order[a].second;
      w.last[order[i].second] = order[b - 1].second;
    }
  }
}

// r[j] = word j of every row: four rounds of 32-bit, 64-bit and 128-bit lane shuffles.
static inline void transpose16(__m512i r[16]) {
  __m512i t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {  // lane l of r[i + c]: word 4l + c of rows i..i+3
    r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
    r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
    r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
    r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  for (int c = 0; c < 4; ++c) {  // a 4 x 4 transpose of lanes across r[c], r[4 + c], ...
    __m512i a = _mm512_shuffle_i32x4(r[c], r[4 + c], 0x44), b = _mm512_shuffle_i32x4(r[c], r[4 + c], 0xee),
            e = _mm512_shuffle_i32x4(r[8 + c], r[12 + c], 0x44),
            f = _mm512_shuffle_i32x4(r[8 + c], r[12 + c], 0xee);
    t[c] = _mm512_shuffle_i32x4(a, e, 0x88);
    t[4 + c] = _mm512_shuffle_i32x4(a, e, 0xdd);
    t[8 + c] = _mm512_shuffle_i32x4(b, f, 0x88);
    t[12 + c] = _mm512_shuffle_i32x4(b, f, 0xdd);
  }
  std::copy(t, t + 16, r);
}

// 32 bf16 * scale, rounded to bf16.
static inline __m512i scaled(__m512i x, __m512 scale) {
  auto widen16 = [](__m256i h) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  };
  __m512 lo = widen16(_mm512_castsi512_si256(x)), hi = widen16(_mm512_extracti64x4_epi64(x, 1));
  return (__m512i)_mm512_cvtne2ps_pbh(_mm512_mul_ps(hi, scale), _mm512_mul_ps(lo, scale));
}

// Queries, keys and values of one (row, head) into the scratch's tile layouts; rows past the
// length and dimensions past head_dim are zeros. Masked loads never touch the masked-off bytes.
static inline void lay_out(const bf16_t* qkv, const Shape& s, int64_t row, int64_t head,
                           AmxScratch& w) {
  const int64_t hidden = s.heads * s.head_dim;
  const __mmask32 low = static_cast<__mmask32>((1ull << std::min<int64_t>(s.head_dim, 32)) - 1);
  const __mmask32 high = static_cast<__mmask32>((1ull << std::max<int64_t>(s.head_dim - 32, 0)) - 1);
  float scale = widen(to_bf16(1.f / std::sqrt(static_cast<float>(s.head_dim))));
  const __m512 sc = _mm512_set1_ps(scale);
  const __m512i pick_low = _mm512_set_epi64(11, 10, 3, 2, 9, 8, 1, 0);
  const __m512i pick_high = _mm512_set_epi64(15, 14, 7, 6, 13, 12, 5, 4);
  for (int64_t j0 = 0; j0 < w.stride; j0 += 16) {
    __m512i k0[16], k1[16], v0[16], v1[16];
    for (int jj = 0; jj < 16; ++jj) {
      const int64_t j = j0 + jj;
      const bool real = j < s.length;
      const bf16_t* q = real ? qkv + (row * s.length + j) * 3 * hidden + head * s.head_dim : qkv;
      const __mmask32 m0 = real ? low : 0, m1 = real ? high : 0;
      bf16_t* scaled_q = w.q.data() + j * kMaxHeadDim;
      _mm512_storeu_si512(scaled_q, scaled(_mm512_maskz_loadu_epi16(m0, q), sc));
      _mm512_storeu_si512(scaled_q + 32, scaled(_mm512_maskz_loadu_epi16(m1, q + 32), sc));
      k0[jj] = _mm512_maskz_loadu_epi16(m0, q + hidden);
      k1[jj] = _mm512_maskz_loadu_epi16(m1, q + hidden + 32);
      v0[jj] = _mm512_maskz_loadu_epi16(m0, q + 2 * hidden);
      v1[jj] = _mm512_maskz_loadu_epi16(m1, q + 2 * hidden + 32);
    }
    transpose16(k0);
    transpose16(k1);
    uint32_t* k = w.k.data() + j0 / 16 * kKeyWords;
    for (int r = 0; r < 16; ++r) {
      _mm512_storeu_si512(k + 16 * r, k0[r]);
      _mm512_storeu_si512(k + 256 + 16 * r, k1[r]);
    }
    // unpack interleaves keys 2r and 2r + 1 within 128-bit lanes (dimensions 8l..8l+3, then
    // 8l+4..8l+7); the permutes put the dimensions back in order.
    for (int jj = 0; jj < 16; jj += 2) {
      uint32_t* v = w.v.data() + (j0 + jj) / 2 * kMaxHeadDim;
      const __m512i* rows[2] = {v0 + jj, v1 + jj};  // dimensions 0-31, 32-63
      for (int h = 0; h < 2; ++h) {
        __m512i lo = _mm512_unpacklo_epi16(rows[h][0], rows[h][1]);
        __m512i hi = _mm512_unpackhi_epi16(rows[h][0], rows[h][1]);
        _mm512_storeu_si512(v + 32 * h, _mm512_permutex2var_epi64(lo, pick_low, hi));
        _mm512_storeu_si512(v + 32 * h + 16, _mm512_permutex2var_epi64(lo, pick_high, hi));
      }
    }
  }
}

// Scores of 16 keys into accumulator tile C: queries in tiles 4 (and 5), keys through 6 (and 7).
// A macro: GCC's tile intrinsics paste their tile numbers into the assembly.
#define KOEDU_KEY_TILE(C, keys)        \
  do {                                 \
    _tile_loadd(6, (keys), 64);        \
    _tile_dpbf16ps(C, 4, 6);           \
    if (two) {                         \
      _tile_loadd(7, (keys) + 256, 64); \
      _tile_dpbf16ps(C, 5, 7);         \
    }                                  \
  } while (0)

// Scores of the block's queries against keys [j, j + 16 N).
template <int N>
static inline void key_tiles(AmxScratch& w, int64_t j, bool two) {
  const uint32_t* k = w.k.data() + j / 16 * kKeyWords;
  float* s = w.scores.data() + j;
  const int64_t bytes = w.stride * sizeof(float);
  _tile_zero(0);
  _tile_zero(1);
  if constexpr (N == 4) {
    _tile_zero(2);
    _tile_zero(3);
  }
  KOEDU_KEY_TILE(0, k);
  KOEDU_KEY_TILE(1, k + kKeyWords);
  if constexpr (N == 4) {
    KOEDU_KEY_TILE(2, k + 2 * kKeyWords);
    KOEDU_KEY_TILE(3, k + 3 * kKeyWords);
  }
  _tile_stored(0, s, bytes);
  _tile_stored(1, s + 16, bytes);
  if constexpr (N == 4) {
    _tile_stored(2, s + 32, bytes);
    _tile_stored(3, s + 48, bytes);
  }
}
#undef KOEDU_KEY_TILE

static inline void query_key_amx(AmxScratch& w, int64_t i0, int64_t begin, int64_t end, int64_t head_dim) {
  const bool two = head_dim > 32;
  _tile_loadd(4, w.q.data() + i0 * kMaxHeadDim, kMaxHeadDim * sizeof(bf16_t));
  if (two) _tile_loadd(5, w.q.data() + i0 * kMaxHeadDim + 32, kMaxHeadDim * sizeof(bf16_t));
  int64_t j = begin;
  for (; j + 64 <= end; j += 64) key_tiles<4>(w, j, two);
  if (j < end) key_tiles<2>(w, j, two);
}

// Outputs of the block, 16 x 16 fp32 per 16 dimensions, summed over keys [begin, end) in steps
// of 32: weights in tile 4, values through 5, 6, 7 (5 again for the fourth 16 dimensions).
template <int NV>
static inline void weights_value_amx(AmxScratch& w, int64_t begin, int64_t end) {
  const int64_t w_bytes = w.stride * sizeof(bf16_t), v_bytes = kMaxHeadDim * sizeof(uint32_t);
  _tile_zero(0);
  if constexpr (NV > 1) _tile_zero(1);
  if constexpr (NV > 2) _tile_zero(2);
  if constexpr (NV > 3) _tile_zero(3);
  for (int64_t j = begin; j < end; j += kKeyStep) {
    const uint32_t* v = w.v.data() + j / 2 * kMaxHeadDim;
    _tile_loadd(4, w.weights.data() + j, w_bytes);
    _tile_loadd(5, v, v_bytes);
    if constexpr (NV > 1) _tile_loadd(6, v + 16, v_bytes);
    if constexpr (NV > 2) _tile_loadd(7, v + 32, v_bytes);
    _tile_dpbf16ps(0, 4, 5);
    if constexpr (NV > 1) _tile_dpbf16ps(1, 4, 6);
    if constexpr (NV > 2) _tile_dpbf16ps(2, 4, 7);
    if constexpr (NV > 3) {
      _tile_loadd(5, v + 48, v_bytes);
      _tile_dpbf16ps(3, 4, 5);
    }
  }
  const int64_t o_bytes = kMaxHeadDim * sizeof(float);
  _tile_stored(0, w.out.data(), o_bytes);
  if constexpr (NV > 1) _tile_stored(1, w.out.data() + 16, o_bytes);
  if constexpr (NV > 2) _tile_stored(2, w.out.data() + 32, o_bytes);
  if constexpr (NV > 3) _tile_stored(3, w.out.data() + 48, o_bytes);
}

// rows of outputs scaled by 1 / sum and rounded to bf16 (dimensions past head_dim in w.out are
// stale, never stored).
static inline void store_outputs(const AmxScratch& w, const float* inverse_sum, int64_t rows,
                                 int64_t head_dim, bf16_t* out, int64_t out_stride) {
  const __mmask32 low = static_cast<__mmask32>((1ull << std::min<int64_t>(head_dim, 32)) - 1);
  const __mmask32 high = static_cast<__mmask32>((1ull << std::max<int64_t>(head_dim - 32, 0)) - 1);
  for (int64_t i = 0; i < rows; ++i) {
    const float* acc = w.out.data() + i * kMaxHeadDim;
    const __m512 s = _mm512_set1_ps(inverse_sum[i]);
    for (int h = 0; h < 2; ++h) {
      __m512bh packed = _mm512_cvtne2ps_pbh(_mm512_mul_ps(_mm512_loadu_ps(acc + 32 * h + 16), s),
                                            _mm512_mul_ps(_mm512_loadu_ps(acc + 32 * h), s));
      _mm512_mask_storeu_epi16(out + i * out_stride + 32 * h, h ? high : low, (__m512i)packed);
    }
  }
}

static inline void query_block_amx(bf16_t* out, const Shape& s, int64_t row, int64_t head, int64_t i0,
                                   AmxScratch& w) {
  const int64_t hidden = s.heads * s.head_dim, rows = std::min(kTileRows, s.length - i0);
  const int32_t* segments = w.segments.data();
  int64_t begin, end;
  block_key_span(w, i0, rows, s.length, begin, end);
  bf16_t* o = out + (row * s.length + i0) * hidden + head * s.head_dim;
  if (begin >= end) {  // padding queries only
    for (int64_t i = 0; i < rows; ++i) std::fill(o + i * hidden, o + i * hidden + s.head_dim, bf16_t(0));
    return;
  }
  begin = begin / kKeyStep * kKeyStep;
  end = (end + kKeyStep - 1) / kKeyStep * kKeyStep;
  query_key_amx(w, i0, begin, end, s.head_dim);
  float inverse_sum[kTileRows];
  for (int64_t i = 0; i < kTileRows; ++i) {  // rows past the length are padding: zero weights
    const int32_t segment = segments[i0 + i];
    bf16_t* weights = w.weights.data() + i * w.stride;
    if (segment == 0) {
      std::fill(weights + begin, weights + end, bf16_t(0));
      inverse_sum[i] = 0.f;
    } else {
      const float* scores = w.scores.data() + i * w.stride;
      inverse_sum[i] = masked_softmax(scores, segments, segment, begin, end, weights);
    }
  }
  switch (s.value_vectors()) {
    case 1: weights_value_amx<1>(w, begin, end); break;
    case 2: weights_value_amx<2>(w, begin, end); break;
    case 3: weights_value_amx<3>(w, begin, end); break;
    default: weights_value_amx<4>(w, begin, end);
  }
  store_outputs(w, inverse_sum, rows, s.head_dim, o, hidden);
}

// bf16 attention of one (row, head) on AMX. Requires head_dim <= 64 and AMX granted to the
// process (KoeduRequestAmx); the tiles are configured and released per item because the pool
// threads run other kernels (the AMX matmul among them) between items.
static inline void attend_amx(const bf16_t* qkv, const int32_t* segment_ids, bf16_t* out, const Shape& s,
                              int64_t row, int64_t head, AmxScratch& w) {
  if (w.row != row) {
    const int32_t* segments = segment_ids + row * s.length;
    std::copy(segments, segments + s.length, w.segments.begin());  // the padded tail stays 0
    row_spans(segments, s.length, w);
    w.row = row;
  }
  configure_tiles();
  lay_out(qkv, s, row, head, w);
  for (int64_t i0 = 0; i0 < s.length; i0 += kTileRows) query_block_amx(out, s, row, head, i0, w);
  _tile_release();
}

}  // namespace koedu
