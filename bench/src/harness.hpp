// Shared machinery of the benchmark: pinned thread pairs, pacing, messages.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <thread>

#include "ringbus/clock.hpp"
#include "ringbus/consumer.hpp"
#include "ringbus_bench/histogram.hpp"
#include "ringbus_bench/pacer.hpp"

namespace ringbus::bench {

inline std::uint64_t ticks() noexcept { return Tsc::ticks(); }

// A latency message: the TSC stamp taken just before the send, then padding to N.
template <std::size_t N>
struct Msg {
  static_assert(N >= 16);
  std::uint64_t stamp;
  std::uint64_t seq;
  std::byte pad[N - 16];
};
static_assert(sizeof(Msg<64>) == 64 && sizeof(Msg<1024>) == 1024);

// A throughput message of exactly N bytes.
template <std::size_t N>
struct Blob {
  std::uint64_t seq;
  std::byte pad[N - 8];
};
template <>
struct Blob<8> {
  std::uint64_t seq;
};

// Makes the compiler assume `p`'s bytes are read, so that a received message is copied
// whole: without it, a queue whose pop() copies into a local of which only the stamp
// is read can have the rest of the copy optimised away, and move one line instead of N.
inline void consume_bytes(const void* p) noexcept { asm volatile("" : : "r"(p) : "memory"); }

// One interleaved turn of a system: `events` paced events, the first `warmup` of them
// not recorded.
struct Chunk {
  int cpu_producer = 0;
  int cpu_consumer = 1;
  std::uint64_t events = 0;
  std::uint64_t warmup = 0;
  std::uint64_t gap_ticks = 0;
};

// Runs `producer` pinned to c.cpu_producer and `consumer` pinned to c.cpu_consumer,
// both released at once once pinned.
template <class P, class C>
void run_pinned(int cpu_producer, int cpu_consumer, P&& producer, C&& consumer) {
  std::atomic<int> ready{0};
  std::thread tc([&] {
    pin_this_thread(cpu_consumer);
    ready.fetch_add(1);
    while (ready.load() < 2) {
    }
    consumer();
  });
  std::thread tp([&] {
    pin_this_thread(cpu_producer);
    ready.fetch_add(1);
    while (ready.load() < 2) {
    }
    producer();
  });
  tp.join();
  tc.join();
}

// A system measured in a latency scenario. run_chunk records ticks into `h`.
class LatencySystem {
 public:
  virtual ~LatencySystem() = default;
  [[nodiscard]] virtual std::string name() const = 0;
  virtual void run_chunk(const Chunk& c, Histogram& h) = 0;
};

}  // namespace ringbus::bench
