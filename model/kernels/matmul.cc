// XLA FFI handlers for the AMX matmul of matmul.h, registered by model/cpu_kernels.py. Rows are
// shared out over XLA's intra-op thread pool in items of 256 rows, which pass over each panel of
// B in L2 as eight 32-row blocks.
//
//   koedu_amx_linear_{f32,bf16}(a (..., K) bf16 or f32, bias (N,) f32, [residual (..., N) f32,
//                               scale (N,) f32, shift (N,) f32,] packed weights...) -> (..., N)
//   attributes: activation (0: none, 1: erf GELU), norm (0, or 1: the three LayerNorm buffers
//   come before the weights, f32 output only), eps. The weights (N_i / 32, K / 2, 32, 2) bf16,
//   one or several of equal shape read side by side (N = their N_i together).
#include <vector>

#include "matmul.h"
#include "pool.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace koedu {

constexpr int64_t kRowsPerItem = kRows;  // matmul.h's per-thread panel holds this many rows

static ffi::ErrorOr<const float*> vector_of(const ffi::RemainingArgs& args, size_t i, size_t size) {
  auto buffer = args.get<ffi::Buffer<ffi::F32>>(i);
  if (buffer.has_error()) return ffi::Unexpected(buffer.error());
  if (buffer->element_count() != size)
    return ffi::Unexpected(ffi::Error::InvalidArgument("a LayerNorm buffer has the wrong size"));
  return buffer->typed_data();
}

template <ffi::DataType D, typename Out>
ffi::Error AmxLinear(ffi::ThreadPool pool, ffi::AnyBuffer a, ffi::Buffer<ffi::F32> bias,
                     ffi::RemainingArgs rest, int32_t activation, int32_t norm_asked, float eps,
                     ffi::ResultBuffer<D> out) {
  auto a_dims = a.dimensions();
  const bool a_f32 = a.element_type() == ffi::DataType::F32;
  if (a_dims.size() < 1 || a_dims.back() % 32 != 0 || (!a_f32 && a.element_type() != ffi::DataType::BF16))
    return ffi::Error::InvalidArgument("the AMX matmul wants a (..., K) in bf16 or f32, K a multiple of 32");
  if (activation != kIdentity && activation != kGelu)
    return ffi::Error::InvalidArgument("activation must be 0 (none) or 1 (GELU)");
  const size_t first_weight = norm_asked ? 3 : 0;
  if (norm_asked && !std::is_same_v<Out, float>)
    return ffi::Error::InvalidArgument("LayerNorm is for an f32 output");
  const size_t parts = rest.size() - std::min(rest.size(), first_weight);
  if (parts < 1 || parts > PackedWeights::kMaxParts)
    return ffi::Error::InvalidArgument("the AMX matmul takes 1 to 4 packed weights");
  PackedWeights w;
  int64_t strips = 0;
  for (size_t i = 0; i < parts; ++i) {
    auto packed = rest.get<ffi::Buffer<ffi::BF16>>(first_weight + i);
    if (packed.has_error()) return packed.error();
    auto dims = packed->dimensions();
    if (dims.size() != 4 || dims[2] != 32 || dims[3] != 2 || dims[1] * 2 != a_dims.back() ||
        (i > 0 && dims[0] != strips))
      return ffi::Error::InvalidArgument("packed weights must be (N / 32, K / 2, 32, 2), all alike");
    strips = dims[0];
    w.parts[i] = reinterpret_cast<const bf16*>(packed->typed_data());
  }
  w.strips_per_part = strips;
  const MatmulShape shape{static_cast<int64_t>(a.element_count()) / a_dims.back(), a_dims.back(),
                          strips * 32 * static_cast<int64_t>(parts)};
  if (bias.element_count() != static_cast<size_t>(shape.n))
    return ffi::Error::InvalidArgument("bias must hold one value per output column");
  Norm norm{nullptr, nullptr, nullptr, eps};
  if (norm_asked) {
    auto residual = vector_of(rest, 0, shape.m * shape.n), scale = vector_of(rest, 1, shape.n),
         shift = vector_of(rest, 2, shape.n);
    for (auto* got : {&residual, &scale, &shift})
      if (got->has_error()) return got->error();
    norm = {*residual, *scale, *shift, eps};
  }
  const void* x = a.untyped_data();
  Out* c = reinterpret_cast<Out*>(out->typed_data());
  const Epilogue epilogue{bias.typed_data(), static_cast<Activation>(activation)};
  const int64_t items = (shape.m + kRowsPerItem - 1) / kRowsPerItem;
  parallel_for(pool, items, [=](int64_t item) {
    const int64_t m0 = item * kRowsPerItem, rows = std::min(kRowsPerItem, shape.m - m0);
    const bf16* a_rows = static_cast<const bf16*>(x) + m0 * shape.k;
    if (a_f32) {
      bf16* converted = aligned_scratch<bf16, 2>(kRowsPerItem * shape.k);
      to_bf16_rows(static_cast<const float*>(x) + m0 * shape.k, rows * shape.k, converted);
      a_rows = converted;
    }
    Out* c_rows = c + m0 * shape.n;
    matmul_rows(a_rows, w, c_rows, shape, epilogue, 0, rows);
    if constexpr (std::is_same_v<Out, float>)
      if (norm.residual)
        add_norm_rows(c_rows, shape.n, rows, {norm.residual + m0 * shape.n, norm.scale, norm.bias, eps});
  });
  return ffi::Error::Success();
}

}  // namespace koedu

#define KOEDU_AMX_LINEAR(name, D, Out)                                                        \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(name, (koedu::AmxLinear<D, Out>),                             \
                                ffi::Ffi::Bind()                                              \
                                    .Ctx<ffi::ThreadPool>()                                   \
                                    .Arg<ffi::AnyBuffer>()                                    \
                                    .Arg<ffi::Buffer<ffi::F32>>()                             \
                                    .RemainingArgs()                                          \
                                    .Attr<int32_t>("activation")                              \
                                    .Attr<int32_t>("norm")                                    \
                                    .Attr<float>("eps")                                       \
                                    .Ret<ffi::Buffer<D>>());
KOEDU_AMX_LINEAR(KoeduAmxLinearF32, ffi::F32, float)
KOEDU_AMX_LINEAR(KoeduAmxLinearBf16, ffi::BF16, koedu::bf16)

extern "C" int KoeduRequestAmx() { return koedu::request_amx(); }
