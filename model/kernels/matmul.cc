// XLA FFI handlers for the AMX matmul of matmul.h, registered by model/cpu_kernels.py. Rows are
// shared out over XLA's intra-op thread pool in items of 256 rows, which pass over each panel of
// B in L2 as eight 32-row blocks.
//
//   koedu_amx_linear_{f32,bf16}(a (..., K) bf16, bias (N,) f32, packed weights...) -> (..., N)
//   with attribute activation (0: none, 1: erf GELU); the weights (N_i / 32, K / 2, 32, 2) bf16,
//   one or several of equal shape read side by side (N = their N_i together).
#include "matmul.h"
#include "pool.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace koedu {

constexpr int64_t kRowsPerItem = 256;

template <ffi::DataType D, typename Out>
ffi::Error AmxLinear(ffi::ThreadPool pool, ffi::Buffer<ffi::BF16> a, ffi::Buffer<ffi::F32> bias,
                     ffi::RemainingArgs weights, int32_t activation, ffi::ResultBuffer<D> out) {
  auto a_dims = a.dimensions();
  if (a_dims.size() < 1 || a_dims.back() % 32 != 0)
    return ffi::Error::InvalidArgument("the AMX matmul wants a (..., K) with K a multiple of 32");
  if (weights.size() < 1 || weights.size() > PackedWeights::kMaxParts)
    return ffi::Error::InvalidArgument("the AMX matmul takes 1 to 4 packed weights");
  if (activation != kIdentity && activation != kGelu)
    return ffi::Error::InvalidArgument("activation must be 0 (none) or 1 (GELU)");
  PackedWeights w;
  int64_t strips = 0;
  for (size_t i = 0; i < weights.size(); ++i) {
    auto packed = weights.get<ffi::Buffer<ffi::BF16>>(i);
    if (packed.has_error()) return packed.error();
    auto dims = packed->dimensions();
    if (dims.size() != 4 || dims[2] != 32 || dims[3] != 2 || dims[1] * 2 != a_dims.back() ||
        (i > 0 && dims[0] != strips))
      return ffi::Error::InvalidArgument("packed weights must be (N / 32, K / 2, 32, 2), all alike");
    strips = dims[0];
    w.parts[i] = reinterpret_cast<const bf16*>(packed->typed_data());
  }
  w.strips_per_part = strips;
  MatmulShape shape{static_cast<int64_t>(a.element_count()) / a_dims.back(), a_dims.back(),
                    strips * 32 * static_cast<int64_t>(weights.size())};
  if (bias.element_count() != static_cast<size_t>(shape.n))
    return ffi::Error::InvalidArgument("bias must hold one value per output column");
  const bf16* x = reinterpret_cast<const bf16*>(a.typed_data());
  Out* c = reinterpret_cast<Out*>(out->typed_data());
  const Epilogue epilogue{bias.typed_data(), static_cast<Activation>(activation)};
  const int64_t items = (shape.m + kRowsPerItem - 1) / kRowsPerItem;
  parallel_for(pool, items, [=](int64_t item) {
    const int64_t m0 = item * kRowsPerItem;
    matmul_rows(x, w, c, shape, epilogue, m0, std::min(m0 + kRowsPerItem, shape.m));
  });
  return ffi::Error::Success();
}

}  // namespace koedu

#define KOEDU_AMX_LINEAR(name, D, Out)                                                        \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(name, (koedu::AmxLinear<D, Out>),                             \
                                ffi::Ffi::Bind()                                              \
                                    .Ctx<ffi::ThreadPool>()                                   \
                                    .Arg<ffi::Buffer<ffi::BF16>>()                            \
                                    .Arg<ffi::Buffer<ffi::F32>>()                             \
                                    .RemainingArgs()                                          \
                                    .Attr<int32_t>("activation")                              \
                                    .Ret<ffi::Buffer<D>>());
KOEDU_AMX_LINEAR(KoeduAmxLinearF32, ffi::F32, float)
KOEDU_AMX_LINEAR(KoeduAmxLinearBf16, ffi::BF16, koedu::bf16)

extern "C" int KoeduRequestAmx() { return koedu::request_amx(); }
