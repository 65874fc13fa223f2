// model/kernels/matmul.h alone, on one thread: GFLOP/s by thread CPU time on the encoder's
// shapes (2048 rows), epilogue included. Beside it, oneDNN's through PyTorch:
//   python -c "import torch,time; torch.set_num_threads(1); ..." (docs/benchmarks.md).
//
//   g++ -O3 -std=c++17 -mavx512f -mfma -mavx512bw -mavx512vl -mavx512bf16 -mamx-tile -mamx-bf16 \
//       -I model/kernels bench/matmul_kernel.cc -o /tmp/matmul_kernel && /tmp/matmul_kernel
#include <time.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

#include "matmul.h"

using namespace koedu;

// XLA hands the kernel 64-byte aligned buffers; a tile row split over two cache lines costs
// about six times as much to load (8.6 against 53 cycles a tile here).
template <typename T>
struct Aligned {
  T* data_;
  explicit Aligned(size_t n) : data_(static_cast<T*>(std::aligned_alloc(64, (n * sizeof(T) + 63) / 64 * 64))) {}
  ~Aligned() { std::free(data_); }
  T* data() { return data_; }
  T& operator[](size_t i) { return data_[i]; }
};

static double thread_seconds() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

template <typename Out>
double gflops(int64_t m, int64_t k, int64_t n, int parts, Activation activation, int reps = 7) {
  Aligned<bf16> a(m * k), w(k * n);
  for (int64_t i = 0; i < m * k; ++i) a[i] = 0x3f80 + (rand() & 0x7f);  // bf16 in [1, 2)
  for (int64_t i = 0; i < k * n; ++i) w[i] = 0x3c00 + (rand() & 0x7f);
  std::vector<float> bias(n, 0.5f);
  Aligned<Out> c(m * n);
  PackedWeights weights;
  weights.strips_per_part = n / 32 / parts;
  for (int p = 0; p < parts; ++p) weights.parts[p] = w.data() + p * (n / parts) * k;
  const MatmulShape shape{m, k, n};
  const Epilogue epilogue{bias.data(), activation};
  double best = 1e9;
  for (int r = 0; r < reps; ++r) {
    const double start = thread_seconds();
    for (int64_t m0 = 0; m0 < m; m0 += 256)
      matmul_rows(a.data(), weights, c.data(), shape, epilogue, m0, std::min(m0 + 256, m));
    best = std::min(best, thread_seconds() - start);
  }
  return 2.0 * m * k * n / best / 1e9;
}

int main() {
  if (request_amx()) return std::puts("Linux refused the AMX tile state"), 1;
  const int64_t m = 2048;
  gflops<float>(m, 768, 768, 1, kIdentity, 20);  // AMX powers up over the first milliseconds
  std::printf("base  QKV    768x2304 -> bf16        %5.0f GFLOP/s\n", gflops<bf16>(m, 768, 2304, 3, kIdentity));
  std::printf("base  output 768x768  -> fp32        %5.0f\n", gflops<float>(m, 768, 768, 1, kIdentity));
  std::printf("base  FFN in 768x3072 -> GELU, bf16  %5.0f\n", gflops<bf16>(m, 768, 3072, 1, kGelu));
  std::printf("base  FFN out 3072x768 -> fp32       %5.0f\n", gflops<float>(m, 3072, 768, 1, kIdentity));
  std::printf("large FFN in 1024x4096 -> GELU, bf16 %5.0f\n", gflops<bf16>(m, 1024, 4096, 1, kGelu));
  std::printf("large FFN out 4096x1024 -> fp32      %5.0f\n", gflops<float>(m, 4096, 1024, 1, kIdentity));
}
