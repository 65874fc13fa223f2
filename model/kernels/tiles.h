// What both AMX kernels (matmul.h, attention_amx.h) need of the machine: Linux's permission to
// use the tile state, one tile configuration, and buffers on 64-byte boundaries.
#pragma once
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <vector>

namespace koedu {

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

// Every tile 16 rows of 64 bytes: 16 fp32 accumulators or outputs, 32 bf16 of A (activations,
// queries, softmax weights) per row, or 16 pairs of B (weights, keys, values).
inline void configure_tiles() {
  TileConfig config;
  for (int t = 0; t < 8; ++t) {
    config.colsb[t] = 64;
    config.rows[t] = 16;
  }
  _tile_loadconfig(&config);
}

// std::vector's storage on a 64-byte boundary: large buffers come from mmap 16 bytes past a
// page, and a tile row split over two cache lines loads about six times slower
// (bench/matmul_kernel.cc: 8.6 against 53 cycles a tile).
template <typename T>
struct Aligned64 {
  using value_type = T;
  Aligned64() = default;
  template <typename U>
  Aligned64(const Aligned64<U>&) {}
  T* allocate(size_t n) { return static_cast<T*>(std::aligned_alloc(64, (n * sizeof(T) + 63) / 64 * 64)); }
  void deallocate(T* p, size_t) { std::free(p); }
  template <typename U>
  bool operator==(const Aligned64<U>&) const { return true; }
  template <typename U>
  bool operator!=(const Aligned64<U>&) const { return false; }
};
template <typename T>
using TileBuffer = std::vector<T, Aligned64<T>>;

// A per-thread buffer of at least `count` T on a 64-byte boundary, kept between calls (slot
// tells buffers of one type apart), for the same reason.
template <typename T, int slot>
T* aligned_scratch(size_t count) {
  struct Buffer {
    T* data = nullptr;
    size_t size = 0;
    ~Buffer() { std::free(data); }
  };
  thread_local Buffer buffer;
  if (buffer.size < count) {
    std::free(buffer.data);
    buffer.data = static_cast<T*>(std::aligned_alloc(64, (count * sizeof(T) + 63) / 64 * 64));
    buffer.size = count;
  }
  return buffer.data;
}

}  // namespace koedu
