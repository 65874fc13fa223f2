// XLA FFI handler for the AMX matmul of matmul.h, registered from model/fused_attention.py's
// loader (model/cpu_kernels.py). Rows are shared out over XLA's intra-op thread pool in items of
// 256 rows, which pass over each panel of B in L2 as eight 32-row blocks.
#include "matmul.h"
#include "pool.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace koedu {

constexpr int64_t kRowsPerItem = 256;

ffi::Error AmxMatmul(ffi::ThreadPool pool, ffi::Buffer<ffi::BF16> a, ffi::Buffer<ffi::BF16> packed,
                     ffi::ResultBuffer<ffi::F32> out) {
  auto a_dims = a.dimensions(), b_dims = packed.dimensions();
  if (a_dims.size() < 1 || b_dims.size() != 4 || b_dims[2] != 32 || b_dims[3] != 2 ||
      a_dims.back() % 32 != 0 || b_dims[1] * 2 != a_dims.back())
    return ffi::Error::InvalidArgument("matmul wants a (..., K) and packed weights (N / 32, K / 2, 32, 2), K a multiple of 32");
  MatmulShape shape{static_cast<int64_t>(a.element_count()) / a_dims.back(), a_dims.back(), b_dims[0] * 32};
  const bf16* x = reinterpret_cast<const bf16*>(a.typed_data());
  const bf16* w = reinterpret_cast<const bf16*>(packed.typed_data());
  float* c = out->typed_data();
  const int64_t items = (shape.m + kRowsPerItem - 1) / kRowsPerItem;
  parallel_for(pool, items, [=](int64_t item) {
    const int64_t m0 = item * kRowsPerItem;
    matmul_rows(x, w, c, shape, m0, m0 + kRowsPerItem < shape.m ? m0 + kRowsPerItem : shape.m);
  });
  return ffi::Error::Success();
}

}  // namespace koedu

XLA_FFI_DEFINE_HANDLER_SYMBOL(KoeduAmxMatmul, koedu::AmxMatmul,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::BF16>>()
                                  .Arg<ffi::Buffer<ffi::BF16>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

extern "C" int KoeduRequestAmx() { return koedu::request_amx(); }
