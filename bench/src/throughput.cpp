// Throughput: producers (pinned to the producer CPU) publish as fast as they can, one
// consumer (pinned to the consumer CPU) reads the first word of every event. The rate
// is events / (time from the start signal to the consumer's last event). ringbus runs
// three ways: with a group's default reader; as `ringbus_trailing` with a reader that
// keeps kTrailBytes behind the tail (GroupOptions::trail_bytes); and, one producer
// only, as `ringbus_exclusive`, whose producer is attached exclusively (its claims
// store the tail instead of a CAS; DESIGN.md, "Exclusive producers").
// Two references run beside them: the same bytes moved one record at a time with the
// least protocol a log can have (`stream`), and that plus the one locked instruction
// per record a log with several producers needs to claim (`stream_claim`); see
// stream_rate(). Where the machine has hardware counters, each thread of a measurement
// counts its cycles, instructions and cache misses from the start signal (Counting).
#include "ringbus_bench/throughput.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <fmt/format.h>
#include <chrono>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "harness.hpp"
#include "peers.hpp"
#include "ringbus/producer.hpp"

namespace ringbus::bench {
namespace {

using Clock = std::chrono::steady_clock;

struct Timing {
  explicit Timing(std::span<const CounterSpec> c) : counters(c) {}
  std::atomic<bool> go{false};
  std::atomic<int> ready{0};
  Clock::time_point start;
  Clock::time_point end;
  // What each thread counts from the start signal (nothing when empty), and the sums.
  std::span<const CounterSpec> counters;
  std::mutex counted_lock;
  bool counted = true;  // every thread's counters opened
  Counts producer{};
  Counts consumer{};

  [[nodiscard]] Measurement measurement(std::uint64_t events) {
    const double rate = static_cast<double>(events) / std::chrono::duration<double>(end - start).count();
    const bool all = !counters.empty() && counted;
    return {rate, all, all ? producer : Counts{}, all ? consumer : Counts{}};
  }
};

// A thread's counters in a measurement that counts: opened before the start signal (the
// thread waits for it in wait_go, which starts them), stopped and added to the
// measurement's sums when the thread's body ends, however it ends.
class Counting {
 public:
  Counting(Timing& t, bool producer)
      : t_(t), producer_(producer), c_(t.counters.empty() ? ThreadCounters() : ThreadCounters(t.counters)) {}
  Counting(const Counting&) = delete;
  Counting& operator=(const Counting&) = delete;
  ~Counting() {
    if (t_.counters.empty()) return;
    const Counts v = c_.stop();
    const std::lock_guard lock(t_.counted_lock);
    t_.counted = t_.counted && c_.ok();
    Counts& into = producer_ ? t_.producer : t_.consumer;
    for (std::size_t i = 0; i < v.size(); ++i) into[i] += v[i];
  }
  void start() noexcept { c_.start(); }

 private:
  Timing& t_;
  bool producer_;
  ThreadCounters c_;
};

void wait_go(Timing& t, int cpu, Counting& counting) {
  pin_this_thread(cpu);
  t.ready.fetch_add(1);
  while (!t.go.load(std::memory_order_acquire)) {
  }
  counting.start();
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
Measurement ringbus_rate(std::uint32_t producers, std::uint32_t batch, bool trailing, bool exclusive,
                         std::uint64_t events, const Options& o, std::span<const CounterSpec> counters) {
  // Every party is a thread of this process: the segment needs no name, and a run
  // interrupted even by SIGKILL leaves nothing in /dev/shm.
  const Segment seg =
      Segment::create(Location::anonymous("ringbus-tput"), {.capacity = o.tput_capacity, .max_event = 1024});
  GroupOptions go;
  go.wait = WaitStrategy::busy_spin();
  go.batch = 256;
  if (trailing) go.trail_bytes = kTrailBytes;
  ConsumerGroup group = ConsumerGroup::join(seg, "tput", go);
  std::vector<Producer> ps;
  for (std::uint32_t i = 0; i < producers; ++i) {
    ps.push_back(Producer::attach(
        seg, {.wait = WaitStrategy::busy_spin(), .timestamps = Timestamps::none, .exclusive = exclusive}));
  }
  Timing t(counters);
  std::uint64_t sink = 0;
  // A claim refused for any reason but `full` ends the run: retrying it would spin
  // forever, and the consumer would wait forever for its events.
  std::atomic<Status> refused{Status::ok};
  const auto going = [&] { return refused.load(std::memory_order_relaxed) == Status::ok; };
  std::thread consumer([&] {
    Counting counting(t, false);
    wait_go(t, o.cpu_consumer, counting);
    Worker& w = group.worker(0);
    std::uint64_t n = 0, sum = 0;
    if (batch > 1) {
      while (n < events && going()) {
        n += w.poll_batch(
            [&](std::span<const Event> b) {
              for (const Event& e : b) sum += *reinterpret_cast<const std::uint64_t*>(e.payload().data());
            },
            256);
      }
    } else {
      while (n < events && going()) {
        n += w.poll([&](const Event& e) { sum += *reinterpret_cast<const std::uint64_t*>(e.payload().data()); }, 256);
      }
    }
    t.end = Clock::now();
    sink = sum;
  });
  std::vector<std::thread> threads;
  for (std::uint32_t k = 0; k < producers; ++k) {
    threads.emplace_back([&, k] {
      Counting counting(t, true);
      wait_go(t, o.cpu_producer, counting);
      Producer& p = ps[k];
      const auto claimed = [&](Status s) {
        if (s == Status::ok) return true;
        if (s != Status::full) refused.store(s);
        return false;
      };
      const std::uint64_t mine = events / producers + (k < events % producers ? 1 : 0);
      Blob<N> b{};
      if (batch <= 1) {
        for (std::uint64_t i = 0; i < mine; ++i) {
          b.seq = i;
          Claim c;
          while (!claimed(p.try_claim(0, 1, N, c))) {
            if (!going()) return;
          }
          std::memcpy(c.payload().data(), &b, N);
          c.commit();
        }
        return;
      }
      for (std::uint64_t i = 0; i < mine;) {
        const auto n = static_cast<std::uint32_t>(std::min<std::uint64_t>(batch, mine - i));
        Claim c;
        while (!claimed(p.try_claim_batch(0, 1, N, n, c))) {
          if (!going()) return;
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
  if (const Status s = refused.load(); s != Status::ok) {
    throw std::runtime_error(fmt::format("ringbus: a claim of {} record(s) of {} bytes in a {} KiB ring returned {}",
                                         batch, N, o.tput_capacity >> 10, to_string(s)));
  }
  return t.measurement(events);
}

// The throughput references. Each event is the bytes of a ringbus record of N payload
// bytes (the 64-byte header and the payload, 8-byte aligned), in a ring of the capacity
// ringbus's throughput cases use, written one record at a time on the producer CPU and
// read on the consumer CPU with the least protocol a log can have. The writer stores the
// payload, then the record's first word, its sequence number + 1 (release); the reader
// waits for that word at the head, as a group's default reader does, reads the
// payload's first word and gives the space back every 256 records (sooner in a small
// ring). `stream` is that
// alone: no header fields, claim, keys, gating groups or recovery journal. `stream_claim`
// adds a locked fetch_add on a tail word per record: what any log that several producers
// append to pays per claim. A locked instruction waits until the stores before it, here
// the last record's, have left the store buffer, and each of those waits for its line to
// come back from the reader's core. Neither is a bound on batched claims, which pay the
// locked instruction once per batch and prefetch their lines for writing (DESIGN.md
// section 3).
template <std::size_t N>
Measurement stream_rate(bool claim, std::uint64_t events, const Options& o, std::span<const CounterSpec> counters) {
  constexpr std::uint64_t kRecord = record_bytes(static_cast<std::uint32_t>(N));
  const std::uint64_t bytes = o.tput_capacity;
  const std::uint64_t slots = bytes / kRecord;
  // Space goes back every 256 records, or every quarter of a small ring: the writer
  // waits for it once the ring is full.
  const std::uint64_t free_every = std::clamp<std::uint64_t>(slots / 4, 1, 256);
  void* mem = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) throw std::runtime_error("stream: cannot map " + std::to_string(bytes) + " bytes");
  struct Unmap {
    void* mem;
    std::uint64_t bytes;
    ~Unmap() { ::munmap(mem, bytes); }
  } unmap{mem, bytes};
  std::memset(mem, 0, bytes);  // mapped in before the clock starts, as a segment is
  auto* const ring = static_cast<std::byte*>(mem);
  auto word = [ring](std::uint64_t slot) {
    return std::atomic_ref<std::uint64_t>(*reinterpret_cast<std::uint64_t*>(ring + slot * kRecord));
  };
  struct alignas(128) Word {
    std::atomic<std::uint64_t> v{0};
  };
  const auto freed = std::make_unique<Word>();  // records the reader is done with
  const auto tail = std::make_unique<Word>();   // stream_claim's claim word
  Timing t(counters);
  std::uint64_t wrong = events;  // the first record read with the wrong payload, if any
  std::thread consumer([&] {
    Counting counting(t, false);
    wait_go(t, o.cpu_consumer, counting);
    std::uint64_t first_wrong = events, unfreed = 0;
    for (std::uint64_t i = 0, slot = 0; i < events; ++i) {
      while (word(slot).load(std::memory_order_acquire) != i + 1) {
      }
      std::uint64_t seq;
      std::memcpy(&seq, ring + slot * kRecord + 64, sizeof seq);
      if (seq != i && first_wrong == events) first_wrong = i;
      if (++unfreed == free_every) {
        freed->v.store(i + 1, std::memory_order_release);
        unfreed = 0;
      }
      if (++slot == slots) slot = 0;
    }
    t.end = Clock::now();
    wrong = first_wrong;
  });
  std::thread producer([&] {
    Counting counting(t, true);
    wait_go(t, o.cpu_producer, counting);
    Blob<N> b{};
    std::uint64_t limit = slots;
    for (std::uint64_t i = 0, slot = 0; i < events; ++i) {
      while (i >= limit) limit = freed->v.load(std::memory_order_acquire) + slots;
      if (claim) tail->v.fetch_add(kRecord, std::memory_order_acq_rel);
      b.seq = i;
      std::memcpy(ring + slot * kRecord + 64, &b, N);
      word(slot).store(i + 1, std::memory_order_release);
      if (++slot == slots) slot = 0;
    }
  });
  release(t, 2);
  producer.join();
  consumer.join();
  if (wrong != events) {
    throw std::runtime_error(fmt::format("{}: record {} was read with another record's payload",
                                         claim ? "stream_claim" : "stream", wrong));
  }
  return t.measurement(events);
}

template <std::size_t N, class Q, class Push, class Pop>
Measurement peer_rate(Q& q, Push push, Pop pop, std::uint64_t events, const Options& o,
                      std::span<const CounterSpec> counters) {
  // The queue filled and emptied once before the clock starts: every page of its slots
  // is touched here, as a ringbus segment's pages are when it is created and the stream
  // reference's ring is (bench/README.md, "Throughput references").
  {
    Blob<N> b{};
    std::uint64_t filled = 0;
    while (push(q, b)) ++filled;
    for (; filled > 0; --filled) {
      if (!pop(q, b)) throw std::logic_error("a peer queue returned fewer items than it took");
    }
  }
  Timing t(counters);
  std::uint64_t sink = 0;
  std::thread consumer([&] {
    Counting counting(t, false);
    wait_go(t, o.cpu_consumer, counting);
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
    Counting counting(t, true);
    wait_go(t, o.cpu_producer, counting);
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
  return t.measurement(events);
}

template <std::size_t N>
Measurement peer(const std::string& system, std::uint64_t events, const Options& o,
                 std::span<const CounterSpec> counters) {
  using B = Blob<N>;
  if (system == "boost_spsc") {
    auto q = std::make_unique<boost::lockfree::spsc_queue<B, boost::lockfree::capacity<kPeerSlots>>>();
    return peer_rate<N>(
        *q, [](auto& qq, const B& b) { return qq.push(b); }, [](auto& qq, B& b) { return qq.pop(b); }, events, o, counters);
  }
  if (system == "moodycamel_rwq") {
    moodycamel::ReaderWriterQueue<B> q(kPeerSlots);
    return peer_rate<N>(
        q, [](auto& qq, const B& b) { return qq.try_enqueue(b); }, [](auto& qq, B& b) { return qq.try_dequeue(b); },
        events, o, counters);
  }
  atomic_queue::AtomicQueueB2<B, std::allocator<B>, true, false, true> q(kPeerSlots);
  return peer_rate<N>(
      q, [](auto& qq, const B& b) { return qq.try_push(b); }, [](auto& qq, B& b) { return qq.try_pop(b); }, events, o,
      counters);
}

template <std::size_t N>
Measurement rate(const ThroughputCase& c, const Options& o, std::uint64_t events,
                 std::span<const CounterSpec> counters) {
  if (c.system == "stream" || c.system == "stream_claim") {
    return stream_rate<N>(c.system == "stream_claim", events, o, counters);
  }
  if (c.system == "ringbus" || c.system == "ringbus_trailing" || c.system == "ringbus_exclusive") {
    return ringbus_rate<N>(c.producers, c.batch, c.system == "ringbus_trailing", c.system == "ringbus_exclusive",
                           events, o, counters);
  }
  return peer<N>(c.system, events, o, counters);
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
    for (std::uint32_t batch : {1u, 32u}) out.push_back({"ringbus_exclusive", scenario, bytes, 1, batch});
    for (const char* reference : {"stream", "stream_claim"}) out.push_back({reference, scenario, bytes, 1, 1});
    for (const char* peer : {"boost_spsc", "moodycamel_rwq", "atomic_queue"}) {
      out.push_back({peer, scenario, bytes, 1, 1});
    }
  }
  return out;
}

std::uint64_t events_for(const ThroughputCase& c, const Options& o) {
  return c.event_bytes >= 512 ? o.tput_events / 4 : o.tput_events;
}

Measurement measure_throughput(const ThroughputCase& c, const Options& o, std::uint64_t events,
                               std::span<const CounterSpec> counters) {
  switch (c.event_bytes) {
    case 8: return rate<8>(c, o, events, counters);
    case 64: return rate<64>(c, o, events, counters);
    default: return rate<512>(c, o, events, counters);
  }
}

}  // namespace ringbus::bench
