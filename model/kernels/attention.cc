// XLA FFI handlers for the fused CPU attention of attention.h, fp32 and bf16, registered from
// model/cpu_kernels.py. Work items are (row, head) pairs, shared out over XLA's intra-op thread
// pool; the calling thread takes items too, so the call finishes even if no pool thread ever
// starts, and asks one helper fewer than the pool has threads so that the cores are not
// oversubscribed. Builds with AMX (the `amx` variant) run bf16 on tiles (attention_amx.h).
#include <atomic>
#include <memory>
#include <thread>

#include "attention.h"
#if defined(__AMX_TILE__) && defined(__AMX_BF16__)
#define KOEDU_AMX_ATTENTION 1
#include "attention_amx.h"
#else
#define KOEDU_AMX_ATTENTION 0
#endif
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace koedu {

template <typename T>
struct Work {
  const T* qkv;
  const int32_t* segments;
  T* out;
  Shape shape;
  int64_t items;
  std::atomic<int64_t> next{0}, done{0};

  // Claims items until none are left. Buffers are touched only under a claimed item, and the
  // caller waits for every item, so a pool task that starts late touches nothing but `next`.
  // The scratch is made on the first claim: a task that claims nothing allocates nothing.
  template <typename S, typename Make, typename Attend>
  void claim(Make make, Attend attend_item) {
    decltype(make()) scratch{};
    for (int64_t item; (item = next.fetch_add(1)) < items;) {
      if (!scratch) scratch = make();
      attend_item(item / shape.heads, item % shape.heads, *scratch);
      done.fetch_add(1, std::memory_order_release);
    }
  }

  void drain() {
#if KOEDU_AMX_ATTENTION
    if constexpr (std::is_same_v<T, bf16_t>) {
      claim<AmxScratch>([this] { return amx_scratch(shape); },
                        [this](int64_t row, int64_t head, AmxScratch& w) {
                          attend_amx(qkv, segments, out, shape, row, head, w);
                        });
      return;
    }
#endif
    claim<Scratch>([this] { return std::make_unique<Scratch>(shape, uses_pairs<T>()); },
                   [this](int64_t row, int64_t head, Scratch& w) {
                     attend(qkv, segments, out, shape, row, head, w);
                   });
  }
};

template <ffi::DataType D, typename T>
ffi::Error FusedAttention(ffi::ThreadPool pool, ffi::Buffer<D> qkv, ffi::Buffer<ffi::S32> segments,
                          ffi::ResultBuffer<D> out) {
  auto dims = qkv.dimensions();
  if (dims.size() != 5 || dims[2] != 3 || dims[4] < 1 || dims[4] > kMaxHeadDim)
    return ffi::Error::InvalidArgument("qkv must be (rows, length, 3, heads, head_dim <= 64)");
  auto seg = segments.dimensions();
  if (seg.size() != 2 || seg[0] != dims[0] || seg[1] != dims[1])
    return ffi::Error::InvalidArgument("segment ids must be (rows, length) of qkv");
  auto work = std::make_shared<Work<T>>();
  work->qkv = reinterpret_cast<const T*>(qkv.typed_data());
  work->segments = segments.typed_data();
  work->out = reinterpret_cast<T*>(out->typed_data());
  work->shape = {dims[0], dims[1], dims[3], dims[4]};
  work->items = dims[0] * dims[3];
  const int64_t helpers = std::min<int64_t>(pool.num_threads() - 1, work->items - 1);
  for (int64_t t = 0; t < helpers; ++t) pool.Schedule([work] { work->drain(); });
  work->drain();
  while (work->done.load(std::memory_order_acquire) < work->items) std::this_thread::yield();
  return ffi::Error::Success();
}

}  // namespace koedu

XLA_FFI_DEFINE_HANDLER_SYMBOL(KoeduFusedAttention, (koedu::FusedAttention<ffi::F32, float>),
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(KoeduFusedAttentionBf16, (koedu::FusedAttention<ffi::BF16, koedu::bf16_t>),
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::BF16>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::BF16>>());

// 1 where bf16 attention runs on AMX tiles, so that tests can tell which path a build takes.
extern "C" int KoeduAttentionOnAmx() { return KOEDU_AMX_ATTENTION; }
