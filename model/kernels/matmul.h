// bf16 x bf16 -> fp32 matmul on Intel AMX tiles: C[M, N] = A[M, K] @ B[K, N], K and N multiples
// of 32 (every XLM-RoBERTa weight), any M.
//
// A is row-major bf16, the activations as XLA hands them over. B is the weight, packed once
// when the model loads (model/cpu_matmul.py `pack`) into strips of 32 columns, each strip its
// K / 2 rows of 32 column pairs: Bp[s][r][j][i] = B[2r + i][32s + j]. A step of 32 down K then
// reads one contiguous 2 KiB block of a strip: two B tiles of 16 pair-rows x 16 columns, which
// is AMX's layout for B.
//
// Output blocks of 32 x 32 are four 16 x 16 fp32 accumulator tiles fed by two A tiles and two B
// tiles per step (all eight tile registers). K is walked in chunks of 1024 and the columns in
// panels of 512: the accumulators go back to C only between chunks, and a chunk of a panel of B
// (1 MiB) stays in L2 while the rows pass over it. Measured on one core (thread CPU time, bench
// beside the 768x3072, 3072x768 and 1024x4096 shapes): chunks of 256 and panels of 256 ran at
// 300-340 GFLOP/s, 1024 and 512 at 540-600; deeper chunks or wider panels gained nothing.
#pragma once
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace koedu {

using bf16 = uint16_t;

struct MatmulShape {
  int64_t m, k, n;
};

// Linux hands out the AMX tile state only to processes that ask (arch_prctl
// ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA); 0 once granted.
inline int request_amx() {
  constexpr int kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return static_cast<int>(syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata));
}

struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// Every tile 16 rows of 64 bytes: 16 fp32 accumulators, or 32 bf16 of A, or 16 pairs of B.
inline void configure_tiles() {
  TileConfig config;
  for (int t = 0; t < 8; ++t) {
    config.colsb[t] = 64;
    config.rows[t] = 16;
  }
  _tile_loadconfig(&config);
}

constexpr int64_t kPanel = 512;  // columns of B per pass over a block of rows
constexpr int64_t kDepth = 1024;  // K per pass

// C[32 rows at a, 32 columns of strip] (+)= A[., k0:k1] @ B[k0:k1, strip]. `a` and `c` point at
// the block's first row; `strip` at the strip's pair-row k0 / 2.
static inline void block(const bf16* a, int64_t a_stride, const bf16* strip, float* c,
                         int64_t c_stride, int64_t depth, bool first) {
  if (first) {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
  } else {
    _tile_loadd(0, c, c_stride * 4);
    _tile_loadd(1, c + 16, c_stride * 4);
    _tile_loadd(2, c + 16 * c_stride, c_stride * 4);
    _tile_loadd(3, c + 16 * c_stride + 16, c_stride * 4);
  }
  for (int64_t k = 0; k < depth; k += 32) {
    const bf16* b = strip + k * 32;  // 16 pair-rows of 64 bf16 per 32 of K
    _tile_loadd(4, a + k, a_stride * 2);
    _tile_loadd(5, a + 16 * a_stride + k, a_stride * 2);
    _tile_loadd(6, b, 128);
    _tile_loadd(7, b + 32, 128);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  _tile_stored(0, c, c_stride * 4);
  _tile_stored(1, c + 16, c_stride * 4);
  _tile_stored(2, c + 16 * c_stride, c_stride * 4);
  _tile_stored(3, c + 16 * c_stride + 16, c_stride * 4);
}

// Rows [m0, m0 + rows) of C with rows a multiple of 32; `a` and `c` point at row m0, with row
// strides a_stride and c_stride (elements).
static void rows_amx(const bf16* a, int64_t a_stride, const bf16* bp, float* c, int64_t c_stride,
                     int64_t rows, const MatmulShape& s) {
  const int64_t strip_size = s.k * 32;  // bf16 per strip
  for (int64_t p = 0; p < s.n; p += kPanel) {
    const int64_t p_end = std::min(p + kPanel, s.n);
    for (int64_t k0 = 0; k0 < s.k; k0 += kDepth) {
      const int64_t depth = std::min(kDepth, s.k - k0);
      for (int64_t m = 0; m < rows; m += 32)
        for (int64_t n = p; n < p_end; n += 32)
          block(a + m * a_stride + k0, a_stride, bp + (n / 32) * strip_size + k0 * 32,
                c + m * c_stride + n, c_stride, depth, k0 == 0);
    }
  }
}

// Rows [m0, m1) of C. Fewer than 32 rows at the end go through a zero-padded copy.
inline void matmul_rows(const bf16* a, const bf16* bp, float* c, const MatmulShape& s, int64_t m0,
                        int64_t m1) {
  configure_tiles();
  const int64_t full = (m1 - m0) / 32 * 32;
  if (full) rows_amx(a + m0 * s.k, s.k, bp, c + m0 * s.n, s.n, full, s);
  if (m0 + full < m1) {
    const int64_t tail = m1 - m0 - full;
    bf16* a_pad = new bf16[32 * s.k]();
    float* c_pad = new float[32 * s.n];
    std::memcpy(a_pad, a + (m0 + full) * s.k, tail * s.k * sizeof(bf16));
    rows_amx(a_pad, s.k, bp, c_pad, s.n, 32, s);
    std::memcpy(c + (m0 + full) * s.n, c_pad, tail * s.n * sizeof(float));
    delete[] a_pad;
    delete[] c_pad;
  }
  _tile_release();
}

}  // namespace koedu
