// bf16 x bf16 matmul on Intel AMX tiles with its epilogue: C[M, N] = act(A[M, K] @ B[K, N] + bias),
// C in fp32 or bf16; K and N multiples of 32 (every XLM-RoBERTa weight), any M.
//
// A is row-major bf16, the activations as XLA hands them over. B is the weight, packed once
// when the model loads (model/cpu_matmul.py `pack`) into strips of 32 columns, each strip its
// K / 2 rows of 32 column pairs: Bp[s][r][j][i] = B[2r + i][32s + j]. A step of 32 down K then
// reads one contiguous 2 KiB block of a strip: two B tiles of 16 pair-rows x 16 columns, which
// is AMX's layout for B. B may be several packed weights side by side (query, key and value):
// the kernel reads their strips in turn, so the joined weight is never copied.
//
// Output blocks of 32 x 32 are four 16 x 16 fp32 accumulator tiles fed by two A tiles and two B
// tiles per step (all eight tile registers). K is walked in chunks of 256 and the columns in
// panels of 256: a block of A's rows for one chunk (16 KiB) stays in L1 while it passes over
// the panel's strips, and the chunk of the panel (128 KiB) in L2 while the rows pass over it;
// partial sums go back to C (or a per-thread fp32 panel for a bf16 C) between chunks. The
// tiles' loads decide the speed: this core runs products at 3.7 TFLOP/s, but one 1 KiB tile
// load per product from L1 caps it at 2.7, and from L2 at about 1.2. Measured on one core
// (thread CPU time, bench/matmul_kernel.cc, 2048 rows, epilogue included), chunks and panels of
// 256 against 1024 and 512: 1300-1550 against 1050-1270 GFLOP/s on base's shapes (GELU's
// 1130-1230 against 870-950), the level of oneDNN's brgemm through PyTorch (1200-1590, no
// epilogue); past K = 3072 (large's FFN output) chunks of 1024 stay ahead (1060-1110 against
// 950-1010). K-inner or rows-inner orders and A copied into tile order first measured slower.
//
// The epilogue (bias, erf GELU, rounding to bf16) runs on each finished 32 x 32 block while it
// is in L1, as OpenVINO's post-ops do: as separate XLA fusions the bias, GELU and bf16 convert
// over [tokens, 3072] cost half as much as the matmuls themselves (docs/benchmarks.md).
#pragma once
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#include "epilogue.h"
#include "tiles.h"

namespace koedu {

struct MatmulShape {
  int64_t m, k, n;
};

// Where B's strips live: `parts` packed weights of equal shape, side by side.
struct PackedWeights {
  static constexpr int kMaxParts = 4;
  const bf16* parts[kMaxParts] = {};
  int64_t strips_per_part = 0;
  const bf16* strip(int64_t s, int64_t k) const {
    return parts[s / strips_per_part] + (s % strips_per_part) * k * 32;
  }
};

constexpr int64_t kPanel = 256;  // columns of B per pass over a block of rows
constexpr int64_t kDepth = 256;  // K per pass (1024 past K = 3072)

// acc[32 rows, 32 columns] (+)= A[., k0:k0 + depth] @ B[k0:k0 + depth, strip]. `a` points at the
// block's first row and column k0; `strip` at the strip's pair-row k0 / 2.
static inline void block(const bf16* a, int64_t a_stride, const bf16* strip, float* acc,
                         int64_t acc_stride, int64_t depth, bool first) {
  if (first) {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
  } else {
    _tile_loadd(0, acc, acc_stride * 4);
    _tile_loadd(1, acc + 16, acc_stride * 4);
    _tile_loadd(2, acc + 16 * acc_stride, acc_stride * 4);
    _tile_loadd(3, acc + 16 * acc_stride + 16, acc_stride * 4);
  }
  for (int64_t k = 0; k < depth; k += 32) {
    const bf16* b = strip + k * 32;  // 16 pair-rows of 64 bf16 per 32 of K
    // Tile registers are not renamed: each load waits for the products still reading its
    // tile, so loads sit between products rather than all four ahead of them (6-8% faster).
    _tile_loadd(4, a + k, a_stride * 2);
    _tile_loadd(6, b, 128);
    _tile_dpbf16ps(0, 4, 6);
    _tile_loadd(7, b + 32, 128);
    _tile_dpbf16ps(1, 4, 7);
    _tile_loadd(5, a + 16 * a_stride + k, a_stride * 2);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  _tile_stored(0, acc, acc_stride * 4);
  _tile_stored(1, acc + 16, acc_stride * 4);
  _tile_stored(2, acc + 16 * acc_stride, acc_stride * 4);
  _tile_stored(3, acc + 16 * acc_stride + 16, acc_stride * 4);
}

// Rows [m0, m0 + rows) of C with rows a multiple of 32 (at most kRows); `a` and `c` point at
// row m0, with row strides a_stride and c_stride (elements). Partial sums between chunks of K
// stay in C when it is fp32, else in a per-thread fp32 panel that the epilogue then rounds.
constexpr int64_t kRows = 256;

template <typename Out>
static void rows_amx(const bf16* a, int64_t a_stride, const PackedWeights& w, Out* c,
                     int64_t c_stride, int64_t rows, const MatmulShape& s, const Epilogue& e) {
  constexpr bool in_place = std::is_same_v<Out, float>;
  alignas(64) static thread_local float partial_panel[in_place ? 1 : kRows * kPanel];
  const int64_t depth_step = s.k <= 3072 ? kDepth : 1024;
  for (int64_t p = 0; p < s.n; p += kPanel) {
    const int64_t p_end = std::min(p + kPanel, s.n);
    for (int64_t k0 = 0; k0 < s.k; k0 += depth_step) {
      const int64_t depth = std::min(depth_step, s.k - k0);
      const bool last = k0 + depth == s.k;
      for (int64_t m = 0; m < rows; m += 32)
        for (int64_t n = p; n < p_end; n += 32) {
          Out* out = c + m * c_stride + n;
          float* acc = partial_panel + m * kPanel + (n - p);
          int64_t acc_stride = kPanel;
          if constexpr (in_place) acc = out, acc_stride = c_stride;
          block(a + m * a_stride + k0, a_stride, w.strip(n / 32, s.k) + k0 * 32, acc, acc_stride,
                depth, k0 == 0);
          if (last && (e.bias || e.activation != kIdentity || !in_place))
            finish(acc, acc_stride, out, c_stride, e.bias ? e.bias + n : nullptr, e.activation);
        }
    }
  }
}

// Rows [m0, m1) of C. Fewer than 32 rows at the end go through a zero-padded copy.
template <typename Out>
inline void matmul_rows(const bf16* a, const PackedWeights& w, Out* c, const MatmulShape& s,
                        const Epilogue& e, int64_t m0, int64_t m1) {
  configure_tiles();
  const int64_t full = (m1 - m0) / 32 * 32;
  if (full) rows_amx(a + m0 * s.k, s.k, w, c + m0 * s.n, s.n, full, s, e);
  if (m0 + full < m1) {
    const int64_t tail = m1 - m0 - full;
    bf16* a_pad = aligned_scratch<bf16, 0>(32 * s.k);
    Out* c_pad = aligned_scratch<Out, 1>(32 * s.n);
    std::memset(a_pad, 0, 32 * s.k * sizeof(bf16));
    std::memcpy(a_pad, a + (m0 + full) * s.k, tail * s.k * sizeof(bf16));
    rows_amx(a_pad, s.k, w, c_pad, s.n, 32, s, e);
    std::memcpy(c + (m0 + full) * s.n, c_pad, tail * s.n * sizeof(Out));
  }
  _tile_release();
}

}  // namespace koedu
