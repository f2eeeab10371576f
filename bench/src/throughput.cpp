// Throughput: producers (pinned to the producer CPU) publish as fast as they can, one
// consumer (pinned to the consumer CPU) reads the first word of every event. The rate
// is events / (time from the start signal to the consumer's last event). ringbus runs
// twice: with a group's default reader, and as `ringbus_trailing` with a reader that
// keeps kTrailBytes behind the tail (GroupOptions::trail_bytes).
#include "throughput.hpp"

#include <unistd.h>

#include <algorithm>
#include <atomic_queue/atomic_queue.h>
#include <boost/lockfree/spsc_queue.hpp>
#include <chrono>
#include <readerwriterqueue/readerwriterqueue.h>
#include <thread>

#include "harness.hpp"
#include "ringbus/producer.hpp"

namespace ringbus::bench {
namespace {

constexpr std::size_t kPeerSlots = 4096;

using Clock = std::chrono::steady_clock;

struct Timing {
  std::atomic<bool> go{false};
  std::atomic<int> ready{0};
  Clock::time_point start;
  Clock::time_point end;
};

void wait_go(Timing& t, int cpu) {
  pin_this_thread(cpu);
  t.ready.fetch_add(1);
  while (!t.go.load(std::memory_order_acquire)) {
  }
}

void release(Timing& t, int threads) {
  while (t.ready.load() < threads) {
  }
  t.start = Clock::now();
  t.go.store(true, std::memory_order_release);
}

// The trailing reader's distance behind the tail (GroupOptions::trail_bytes).
constexpr std::uint32_t kTrailBytes = 16u << 10;

template <std::size_t N>
double ringbus_rate(std::uint32_t producers, std::uint32_t batch, bool trailing, std::uint64_t events,
                    const Options& o) {
  const Location loc = Location::shm("ringbus-tput-" + std::to_string(::getpid()));
  const Segment seg = Segment::create(
      loc, {.capacity = o.tput_capacity, .max_event = 1024, .if_exists = SegmentOptions::IfExists::replace});
  struct Remove {
    Location loc;
    ~Remove() { Segment::remove(loc); }
  } remove{loc};
  GroupOptions go;
  go.wait = WaitStrategy::busy_spin();
  go.batch = 256;
  if (trailing) go.trail_bytes = kTrailBytes;
  ConsumerGroup group = ConsumerGroup::join(seg, "tput", go);
  std::vector<Producer> ps;
  for (std::uint32_t i = 0; i < producers; ++i) {
    ps.push_back(Producer::attach(seg, {.wait = WaitStrategy::busy_spin(), .timestamps = Timestamps::none}));
  }
  Timing t;
  std::uint64_t sink = 0;
  std::thread consumer([&] {
    wait_go(t, o.cpu_consumer);
    Worker& w = group.worker(0);
    std::uint64_t n = 0, sum = 0;
    if (batch > 1) {
      while (n < events) {
        n += w.poll_batch(
            [&](std::span<const Event> b) {
              for (const Event& e : b) sum += *reinterpret_cast<const std::uint64_t*>(e.payload().data());
            },
            256);
      }
    } else {
      while (n < events) {
        n += w.poll([&](const Event& e) { sum += *reinterpret_cast<const std::uint64_t*>(e.payload().data()); }, 256);
      }
    }
    t.end = Clock::now();
    sink = sum;
  });
  std::vector<std::thread> threads;
  for (std::uint32_t k = 0; k < producers; ++k) {
    threads.emplace_back([&, k] {
      wait_go(t, o.cpu_producer);
      Producer& p = ps[k];
      const std::uint64_t mine = events / producers + (k < events % producers ? 1 : 0);
      Blob<N> b{};
      if (batch <= 1) {
        for (std::uint64_t i = 0; i < mine; ++i) {
          b.seq = i;
          Claim c;
          while (p.try_claim(0, 1, N, c) != Status::ok) {
          }
          std::memcpy(c.payload().data(), &b, N);
          c.commit();
        }
        return;
      }
      for (std::uint64_t i = 0; i < mine;) {
        const auto n = static_cast<std::uint32_t>(std::min<std::uint64_t>(batch, mine - i));
        Claim c;
        while (p.try_claim_batch(0, 1, N, n, c) != Status::ok) {
        }
        for (std::uint32_t j = 0; j < n; ++j, ++i) {
          b.seq = i;
          std::memcpy(c.payload(j).data(), &b, N);
        }
        c.commit();
      }
    });
  }
  release(t, static_cast<int>(producers) + 1);
  for (auto& th : threads) th.join();
  consumer.join();
  (void)sink;
  return static_cast<double>(events) / std::chrono::duration<double>(t.end - t.start).count();
}

template <std::size_t N, class Q, class Push, class Pop>
double peer_rate(Q& q, Push push, Pop pop, std::uint64_t events, const Options& o) {
  Timing t;
  std::uint64_t sink = 0;
  std::thread consumer([&] {
    wait_go(t, o.cpu_consumer);
    Blob<N> b{};
    std::uint64_t sum = 0;
    for (std::uint64_t n = 0; n < events;) {
      if (pop(q, b)) {
        sum += b.seq;
        ++n;
      }
    }
    t.end = Clock::now();
    sink = sum;
  });
  std::thread producer([&] {
    wait_go(t, o.cpu_producer);
    Blob<N> b{};
    for (std::uint64_t i = 0; i < events; ++i) {
      b.seq = i;
      while (!push(q, b)) {
      }
    }
  });
  release(t, 2);
  producer.join();
  consumer.join();
  (void)sink;
  return static_cast<double>(events) / std::chrono::duration<double>(t.end - t.start).count();
}

template <std::size_t N>
double peer(const std::string& system, std::uint64_t events, const Options& o) {
  using B = Blob<N>;
  if (system == "boost_spsc") {
    auto q = std::make_unique<boost::lockfree::spsc_queue<B, boost::lockfree::capacity<kPeerSlots>>>();
    return peer_rate<N>(
        *q, [](auto& qq, const B& b) { return qq.push(b); }, [](auto& qq, B& b) { return qq.pop(b); }, events, o);
  }
  if (system == "moodycamel_rwq") {
    moodycamel::ReaderWriterQueue<B> q(kPeerSlots);
    return peer_rate<N>(
        q, [](auto& qq, const B& b) { return qq.try_enqueue(b); }, [](auto& qq, B& b) { return qq.try_dequeue(b); },
        events, o);
  }
  atomic_queue::AtomicQueueB2<B, std::allocator<B>, true, false, true> q(kPeerSlots);
  return peer_rate<N>(
      q, [](auto& qq, const B& b) { return qq.try_push(b); }, [](auto& qq, B& b) { return qq.try_pop(b); }, events, o);
}

template <std::size_t N>
double rate(const ThroughputCase& c, const Options& o, std::uint64_t events) {
  if (c.system == "ringbus" || c.system == "ringbus_trailing") {
    return ringbus_rate<N>(c.producers, c.batch, c.system == "ringbus_trailing", events, o);
  }
  return peer<N>(c.system, events, o);
}

}  // namespace

std::vector<ThroughputCase> throughput_cases() {
  std::vector<ThroughputCase> out;
  for (std::uint32_t bytes : {8u, 64u, 512u}) {
    const std::string scenario = "tput" + std::to_string(bytes);
    for (const char* system : {"ringbus", "ringbus_trailing"}) {
      for (std::uint32_t producers : {1u, 2u}) {
        for (std::uint32_t batch : {1u, 32u}) out.push_back({system, scenario, bytes, producers, batch});
      }
    }
    for (const char* peer : {"boost_spsc", "moodycamel_rwq", "atomic_queue"}) {
      out.push_back({peer, scenario, bytes, 1, 1});
    }
  }
  return out;
}

double measure_throughput(const ThroughputCase& c, const Options& o, std::uint64_t events) {
  switch (c.event_bytes) {
    case 8: return rate<8>(c, o, events);
    case 64: return rate<64>(c, o, events);
    default: return rate<512>(c, o, events);
  }
}

}  // namespace ringbus::bench
