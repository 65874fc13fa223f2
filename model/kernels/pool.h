// Work items shared out over XLA's intra-op thread pool. The calling thread takes items too, so
// the call finishes even if no pool thread ever starts, and asks one helper fewer than the pool
// has threads so that the cores are not oversubscribed.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>
#include <utility>

#include "xla/ffi/api/ffi.h"

namespace koedu {

// Runs body(item) for every item in [0, items) and returns when all have run. Buffers are
// touched only under a claimed item, and the caller waits for every item, so a pool task that
// starts late touches nothing but the counters.
template <typename Body>
void parallel_for(xla::ffi::ThreadPool& pool, int64_t items, Body body) {
  struct Shared {
    Body body;
    int64_t items;
    std::atomic<int64_t> next{0}, done{0};
    Shared(Body b, int64_t n) : body(std::move(b)), items(n) {}
    void drain() {
      for (int64_t item; (item = next.fetch_add(1)) < items;) {
        body(item);
        done.fetch_add(1, std::memory_order_release);
      }
    }
  };
  auto shared = std::make_shared<Shared>(std::move(body), items);
  const int64_t helpers = std::min<int64_t>(pool.num_threads() - 1, items - 1);
  for (int64_t t = 0; t < helpers; ++t) pool.Schedule([shared] { shared->drain(); });
  shared->drain();
  while (shared->done.load(std::memory_order_acquire) < items) std::this_thread::yield();
}

}  // namespace koedu
