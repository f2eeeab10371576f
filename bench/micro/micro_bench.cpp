// Micro-benchmarks of single steps of the hot paths, on one thread (no cache line
// crosses cores): claim + commit, key sequencing, event decoding by a worker.
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "ringbus/consumer.hpp"
#include "ringbus/detail/key_table.hpp"
#include "ringbus/producer.hpp"

namespace {

using namespace ringbus;

struct Scratch {
  Location loc;
  Segment seg;
  explicit Scratch(std::uint64_t capacity = 16u << 20, std::uint32_t keys = 1u << 15)
      : loc(Location::shm("ringbus-micro-" + std::to_string(::getpid()))),
        seg(Segment::create(loc, {.capacity = capacity,
                                  .max_event = 4096,
                                  .key_slots = keys,
                                  .if_exists = SegmentOptions::IfExists::replace})) {}
  ~Scratch() { Segment::remove(loc); }
};

std::vector<std::uint64_t> shuffled_keys(std::size_t n) {
  std::vector<std::uint64_t> k(n);
  std::iota(k.begin(), k.end(), std::uint64_t{1});
  std::shuffle(k.begin(), k.end(), std::mt19937_64(7));
  return k;
}

// Claim + copy + commit of one event; no consumer group, so the ring is overwritten
// freely and the producer never waits. range(0): payload bytes; range(1): distinct
// keys (0 = unkeyed); range(2): 1 = header timestamp from the clock.
void BM_ClaimCommit(benchmark::State& state) {
  const auto bytes = static_cast<std::uint32_t>(state.range(0));
  const auto nkeys = static_cast<std::size_t>(state.range(1));
  Scratch s;
  Producer p = Producer::attach(
      s.seg, {.timestamps = state.range(2) != 0 ? Timestamps::clock : Timestamps::none});
  const auto keys = shuffled_keys(nkeys == 0 ? 1 : nkeys);
  std::vector<std::byte> payload(bytes, std::byte{1});
  std::size_t i = 0;
  for (auto _ : state) {
    Claim c;
    if (p.try_claim(nkeys == 0 ? 0 : keys[i++ % nkeys], 1, bytes, c) != Status::ok) state.SkipWithError("claim");
    std::memcpy(c.payload().data(), payload.data(), bytes);
    c.commit();
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * bytes);
}
BENCHMARK(BM_ClaimCommit)
    ->ArgNames({"bytes", "keys", "clock"})
    ->Args({8, 0, 0})
    ->Args({64, 0, 0})
    ->Args({512, 0, 0})
    ->Args({64, 0, 1})
    ->Args({64, 1, 0})
    ->Args({64, 10000, 0});

// Batched claims of `batch` 8-byte records.
void BM_ClaimCommitBatch(benchmark::State& state) {
  const auto batch = static_cast<std::uint32_t>(state.range(0));
  Scratch s;
  Producer p = Producer::attach(s.seg, {.timestamps = Timestamps::none});
  for (auto _ : state) {
    Claim c;
    if (p.try_claim_batch(0, 1, 8, batch, c) != Status::ok) state.SkipWithError("claim");
    for (std::uint32_t j = 0; j < batch; ++j) {
      const std::uint64_t v = j;
      std::memcpy(c.payload(j).data(), &v, 8);
    }
    c.commit();
  }
  state.SetItemsProcessed(state.iterations() * batch);
}
BENCHMARK(BM_ClaimCommitBatch)->Arg(8)->Arg(32)->Arg(128);

// The sequencing step alone: find the key's entry, take and release its latch.
void BM_KeySequencing(benchmark::State& state) {
  const auto nkeys = static_cast<std::size_t>(state.range(0));
  Scratch s(1u << 16, 1u << 15);
  const auto& r = s.seg.refs();
  const auto keys = shuffled_keys(nkeys);
  std::size_t i = 0;
  for (auto _ : state) {
    const std::uint64_t idx = detail::find_or_insert_key(r, keys[i++ % nkeys]);
    auto& l = r.keys[idx].latch;
    std::uint64_t w = l.load(std::memory_order_relaxed);
    while (!l.compare_exchange_weak(w, layout::latch::make(true, 0, layout::latch::last_seq(w)),
                                    std::memory_order_acquire)) {
    }
    l.store(layout::latch::make(false, 0, layout::latch::last_seq(w) + 1), std::memory_order_release);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_KeySequencing)->Arg(1)->Arg(1000)->Arg(10000);

// A worker reading committed records: frame load, bounds checks, routing, handler call.
// range(0): workers in the group (the worker reads everyone's records, handles 1/n).
void BM_EventDecode(benchmark::State& state) {
  const auto workers = static_cast<std::uint32_t>(state.range(0));
  Scratch s(64u << 20);
  ConsumerGroup g = ConsumerGroup::join(s.seg, "decode", {.workers = workers});
  Producer p = Producer::attach(s.seg, {.timestamps = Timestamps::none});
  constexpr int kBatch = 4096;
  std::uint64_t sum = 0, records = 0;
  for (auto _ : state) {
    state.PauseTiming();
    for (int i = 0; i < kBatch; ++i) {
      const std::uint64_t v = static_cast<std::uint64_t>(i);
      if (p.try_publish(1 + v % 64, 1, std::as_bytes(std::span(&v, 1))) != Status::ok) state.SkipWithError("publish");
    }
    for (std::uint32_t w = 1; w < workers; ++w) g.worker(w).poll([](const Event&) {}, kBatch);
    state.ResumeTiming();
    g.worker(0).poll([&](const Event& e) { sum += *reinterpret_cast<const std::uint64_t*>(e.payload().data()); },
                     kBatch);
    records += kBatch;
  }
  benchmark::DoNotOptimize(sum);
  state.SetItemsProcessed(static_cast<std::int64_t>(records));
}
BENCHMARK(BM_EventDecode)->Arg(1)->Arg(4);

}  // namespace

BENCHMARK_MAIN();
