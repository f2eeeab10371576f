// Latency systems. Every system is measured the same way: the sending thread (pinned to
// the producer CPU) paces itself, stamps the TSC just before it sends, and sends a
// message of the scenario's size; the receiving thread (pinned to the consumer CPU)
// copies the message out and reads the TSC with rdtscp, which waits for the loads
// before it. The difference is one sample. Round-trip systems stamp and receive on the
// same thread. Every queue's sending side is `send_paced`; the two floors, which send no
// message, pace and stamp the same way in their own loops.
#include "latency.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>

#include "peers.hpp"
#include "ringbus/producer.hpp"
#include "ringbus/segment.hpp"
#include "ringbus_bench/publish.hpp"

namespace ringbus::bench {
namespace {

// rdtscp: waits for the loads before it. A plain rdtsc may read the clock before the
// copied message has arrived, which makes every two-line queue look like one line.
inline std::uint64_t end_ticks() noexcept { return Tsc::ticks_after_loads(); }

// The sending side of every queue measured: `events` messages, one every `gap_ticks`,
// each stamped just before it is handed to `send(message, index)`.
template <std::size_t N, class Send>
void send_paced(std::uint64_t events, std::uint64_t gap_ticks, Send&& send) {
  Pacer pace(gap_ticks);
  Msg<N> m{};
  for (std::uint64_t i = 0; i < events; ++i) {
    pace.wait();
    m.seq = i;
    m.stamp = ticks();
    send(m, i);
  }
}

// ---------------------------------------------------------------------------------
// The floor: one cache line bounced between the two CPUs. One-way = RTT / 2.
class Floor final : public LatencySystem {
 public:
  explicit Floor(bool rtt) : rtt_(rtt) {}
  [[nodiscard]] std::string name() const override { return "floor"; }
  void run_chunk(const Chunk& c, Histogram& h) override {
    line_->store(0);
    std::atomic<std::uint64_t>& line = *line_;
    run_pinned(
        c.cpu_producer, c.cpu_consumer,
        [&] {
          Pacer pace(c.gap_ticks);
          for (std::uint64_t i = 0; i < c.events; ++i) {
            pace.wait();
            const std::uint64_t t0 = ticks();
            line.store(2 * i + 1, std::memory_order_release);
            while (line.load(std::memory_order_acquire) != 2 * i + 2) {
            }
            const std::uint64_t t1 = end_ticks();
            if (i >= c.warmup) h.record(rtt_ ? t1 - t0 : (t1 - t0) / 2);
          }
        },
        [&] {
          for (std::uint64_t i = 0; i < c.events; ++i) {
            while (line.load(std::memory_order_acquire) != 2 * i + 1) {
            }
            line.store(2 * i + 2, std::memory_order_release);
          }
        });
  }

 private:
  struct alignas(128) Line {
    std::atomic<std::uint64_t> v{0};
  };
  std::unique_ptr<Line> owner_ = std::make_unique<Line>();
  std::atomic<std::uint64_t>* line_ = &owner_->v;
  bool rtt_;
};

// The least a one-way message can cost: a ring of kPeerSlots lines, one line per message
// holding its sequence and stamp, written by the sender and spun on by the receiver.
// On our VMs, when the two vCPUs sit far apart, this costs 1.2-1.5 x RTT/2: the first
// write to a line the receiver is watching is slower than the ping-pong's steady state.
class FloorOneWay final : public LatencySystem {
 public:
  [[nodiscard]] std::string name() const override { return "floor_oneway"; }
  void run_chunk(const Chunk& c, Histogram& h) override {
    for (Slot& s : *ring_) s.seq.store(0, std::memory_order_relaxed);
    Slots& ring = *ring_;
    run_pinned(
        c.cpu_producer, c.cpu_consumer,
        [&] {
          Pacer pace(c.gap_ticks);
          for (std::uint64_t i = 0; i < c.events; ++i) {
            pace.wait();
            Slot& s = ring[i % ring.size()];
            s.stamp = ticks();
            s.seq.store(i + 1, std::memory_order_release);
          }
        },
        [&] {
          for (std::uint64_t i = 0; i < c.events; ++i) {
            Slot& s = ring[i % ring.size()];
            while (s.seq.load(std::memory_order_acquire) < i + 1) {
            }
            const std::uint64_t stamp = s.stamp;
            const std::uint64_t now = end_ticks();
            if (i >= c.warmup) h.record(now - stamp);
          }
        });
  }

 private:
  struct alignas(64) Slot {
    std::atomic<std::uint64_t> seq{0};
    std::uint64_t stamp = 0;
  };
  using Slots = std::array<Slot, kPeerSlots>;
  std::unique_ptr<Slots> ring_ = std::make_unique<Slots>();
};

// ---------------------------------------------------------------------------------
// Peers: SPSC queues of N-byte messages, kPeerSlots slots.

template <std::size_t N>
struct BoostOps {
  using Q = boost::lockfree::spsc_queue<Msg<N>, boost::lockfree::capacity<kPeerSlots>>;
  static constexpr const char* kName = "boost_spsc";
  static std::unique_ptr<Q> make() { return std::make_unique<Q>(); }
  static bool push(Q& q, const Msg<N>& m) { return q.push(m); }
  static bool pop(Q& q, Msg<N>& m) { return q.pop(m); }
};

template <std::size_t N>
struct MoodycamelOps {
  using Q = moodycamel::ReaderWriterQueue<Msg<N>>;
  static constexpr const char* kName = "moodycamel_rwq";
  static std::unique_ptr<Q> make() { return std::make_unique<Q>(kPeerSlots); }
  static bool push(Q& q, const Msg<N>& m) { return q.try_enqueue(m); }
  static bool pop(Q& q, Msg<N>& m) { return q.try_dequeue(m); }
};

template <std::size_t N>
struct AtomicQueueOps {
  using Q = atomic_queue::AtomicQueueB2<Msg<N>, std::allocator<Msg<N>>, /*MAXIMIZE_THROUGHPUT=*/true,
                                        /*TOTAL_ORDER=*/false, /*SPSC=*/true>;
  static constexpr const char* kName = "atomic_queue";
  static std::unique_ptr<Q> make() { return std::make_unique<Q>(kPeerSlots); }
  static bool push(Q& q, const Msg<N>& m) { return q.try_push(m); }
  static bool pop(Q& q, Msg<N>& m) { return q.try_pop(m); }
};

template <class Ops, std::size_t N>
class Peer final : public LatencySystem {
 public:
  explicit Peer(bool rtt) : rtt_(rtt), q_(Ops::make()), back_(Ops::make()) {}
  [[nodiscard]] std::string name() const override { return Ops::kName; }
  void run_chunk(const Chunk& c, Histogram& h) override {
    auto& q = *q_;
    auto& back = *back_;
    if (!rtt_) {
      run_pinned(
          c.cpu_producer, c.cpu_consumer,
          [&] {
            send_paced<N>(c.events, c.gap_ticks, [&](const Msg<N>& m, std::uint64_t) {
              while (!Ops::push(q, m)) {
              }
            });
          },
          [&] {
            Msg<N> m{};
            for (std::uint64_t i = 0; i < c.events;) {
              if (Ops::pop(q, m)) {
                consume_bytes(&m);
                const std::uint64_t now = end_ticks();
                if (i >= c.warmup) h.record(now - m.stamp);
                ++i;
              }
            }
          });
      return;
    }
    run_pinned(
        c.cpu_producer, c.cpu_consumer,
        [&] {
          Msg<N> r{};
          send_paced<N>(c.events, c.gap_ticks, [&](const Msg<N>& m, std::uint64_t i) {
            while (!Ops::push(q, m)) {
            }
            while (!Ops::pop(back, r)) {
            }
            consume_bytes(&r);
            const std::uint64_t now = end_ticks();
            if (i >= c.warmup) h.record(now - r.stamp);
          });
        },
        [&] {
          Msg<N> m{};
          for (std::uint64_t i = 0; i < c.events; ++i) {
            while (!Ops::pop(q, m)) {
            }
            consume_bytes(&m);
            while (!Ops::push(back, m)) {
            }
          }
        });
  }

 private:
  bool rtt_;
  std::unique_ptr<typename Ops::Q> q_;
  std::unique_ptr<typename Ops::Q> back_;
};

// ---------------------------------------------------------------------------------
// ringbus.

std::atomic<int> g_segments{0};

// A shared-memory segment of one system, anonymous: the process scenario's producer
// process is forked from the benchmark and uses the mapping it inherits. A run that is
// interrupted, even by SIGKILL, leaves nothing in /dev/shm at any point.
struct BenchSegment {
  Segment seg;
  explicit BenchSegment(std::uint64_t capacity, std::uint32_t keys = 1 << 14)
      : seg(Segment::create(Location::anonymous("ringbus-bench-" + std::to_string(g_segments++)),
                            {.capacity = capacity, .max_event = 4096, .key_slots = keys})) {}
};

// Every system holds about 4096 events: the peers have 4096 slots, a ringbus ring the
// power of two nearest (by ratio) to the bytes of 4096 records. A ring much larger than
// the peers' would make ringbus's writes cache misses the peers never pay: for 1 KiB
// events (1088-byte records) the power of two above, 8 MiB, holds 7710 records in twice
// the peers' 4 MiB; 4 MiB holds 3855.
constexpr std::uint64_t ring_for(std::size_t payload) {
  const std::uint64_t want = std::uint64_t{kPeerSlots} * record_bytes(static_cast<std::uint32_t>(payload));
  const std::uint64_t down = std::bit_floor(want);
  const std::uint64_t up = std::bit_ceil(want);
  // want / down <= up / want, in doubles: the squares of large rings overflow 64 bits.
  return static_cast<double>(want) * static_cast<double>(want) <= static_cast<double>(down) * static_cast<double>(up)
             ? down
             : up;
}
static_assert(ring_for(64) == 512 * 1024);
static_assert(ring_for(1024) == 4 * 1024 * 1024);
static_assert(ring_for(1500) == 8 * 1024 * 1024);  // 1568-byte records: 6.1 MiB
static_assert(ring_for(std::size_t{1} << 30) == std::uint64_t{1} << 42);  // 4 TiB: its square is 2^84

// Default producer configuration (header timestamps on), busy-spinning when full.
const ProducerOptions kBenchProducer{.wait = WaitStrategy::busy_spin()};
GroupOptions bench_group() {
  GroupOptions o;
  o.workers = 1;
  o.wait = WaitStrategy::busy_spin();
  o.batch = 64;
  return o;
}

// One-way, thread to thread; optionally keyed (sequencing over `keys` distinct keys in a
// shuffled order) and with extra gating groups that consume in the background.
template <std::size_t N>
class RingbusOneWay final : public LatencySystem {
 public:
  RingbusOneWay(std::uint64_t keys, int extra_groups, int cpu_background, std::string name = "ringbus")
      : name_(std::move(name)),
        segment_(ring_for(N), keys > 8192 ? 1u << 14 : 1u << 10),
        group_(ConsumerGroup::join(segment_.seg, "measured", bench_group())),
        producer_(Producer::attach(segment_.seg, kBenchProducer)) {
    keys_.resize(keys);
    std::iota(keys_.begin(), keys_.end(), std::uint64_t{1});
    std::shuffle(keys_.begin(), keys_.end(), std::mt19937_64(42));
    for (int g = 0; g < extra_groups; ++g) {
      GroupOptions o;
      o.workers = 1;
      // Parked when idle: the producer wakes them (a futex syscall only while one is
      // parked); between events they spin briefly and yield on the producer's CPU.
      o.wait = WaitStrategy::spin_park(100, 10, std::chrono::milliseconds(10));
      if (cpu_background >= 0) o.cpus = {cpu_background};
      background_.push_back(ConsumerGroup::join(segment_.seg, "background-" + std::to_string(g), o));
    }
  }
  [[nodiscard]] std::string name() const override { return name_; }
  void run_chunk(const Chunk& c, Histogram& h) override {
    for (ConsumerGroup& g : background_) g.start([](const Event&) {});
    Worker& w = group_.worker(0);
    run_pinned(
        c.cpu_producer, c.cpu_consumer,
        [&] {
          send_paced<N>(c.events, c.gap_ticks, [&](const Msg<N>& m, std::uint64_t i) {
            publish_copy(producer_, keys_.empty() ? 0 : keys_[i % keys_.size()], m);
          });
        },
        [&] {
          Msg<N> m{};
          std::uint64_t i = 0;
          while (i < c.events) {
            w.poll(
                [&](const Event& e) {
                  std::memcpy(&m, e.payload().data(), N);
                  consume_bytes(&m);
                  const std::uint64_t now = end_ticks();
                  if (i >= c.warmup) h.record(now - m.stamp);
                  ++i;
                },
                64);
          }
        });
    for (ConsumerGroup& g : background_) g.stop();
  }

 private:
  std::string name_;
  BenchSegment segment_;
  ConsumerGroup group_;
  Producer producer_;
  std::vector<std::uint64_t> keys_;
  std::vector<ConsumerGroup> background_;
};

// How a process ended, from its wait status.
std::string describe_exit(int status) {
  if (WIFSIGNALED(status)) return fmt::format("was killed by signal {} ({})", WTERMSIG(status), ::strsignal(WTERMSIG(status)));
  return fmt::format("exited with status {}", WEXITSTATUS(status));
}

// One-way, process to process: the producer is a child process pinned to the producer
// CPU, told over a pipe how many events to send per chunk.
class RingbusProcess final : public LatencySystem {
 public:
  explicit RingbusProcess(int cpu_producer)
      : segment_(ring_for(64), 1u << 14),
        group_(ConsumerGroup::join(segment_.seg, "measured", bench_group())) {
    // The commands go over a socket, sent with MSG_NOSIGNAL: a producer process that has
    // died makes the send fail instead of raising SIGPIPE.
    int cmd[2], ack[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM, 0, cmd) != 0 || ::pipe(ack) != 0) throw std::runtime_error("pipe failed");
    const pid_t bench = ::getpid();
    child_ = ::fork();
    if (child_ < 0) throw std::runtime_error("fork failed");
    if (child_ == 0) {
      ::close(cmd[1]);
      ::close(ack[0]);
      child(segment_.seg, bench, cpu_producer, cmd[0], ack[1]);
    }
    ::close(cmd[0]);
    ::close(ack[1]);
    cmd_ = cmd[1];
    ack_ = ack[0];
    // The child acknowledges its attach.
    char attached = 0;
    if (::read(ack_, &attached, 1) != 1) {
      ::close(cmd_);
      ::close(ack_);
      ::waitpid(child_, nullptr, 0);
      throw std::runtime_error("the producer process could not attach to " + segment_.seg.location().display());
    }
    // Reaps the producer process whenever it exits: one that dies while the consumer
    // waits for its events ends the chunk instead of leaving the consumer spinning.
    reaper_ = std::thread([this] {
      int status = 0;
      ::waitpid(child_, &status, 0);
      status_ = status;
      gone_.store(true, std::memory_order_release);
    });
  }
  ~RingbusProcess() override {
    const Command stop{0, 0};
    (void)::send(cmd_, &stop, sizeof stop, MSG_NOSIGNAL);
    reaper_.join();
    ::close(cmd_);
    ::close(ack_);
  }
  [[nodiscard]] std::string name() const override { return "ringbus"; }
  void run_chunk(const Chunk& c, Histogram& h) override {
    Worker& w = group_.worker(0);
    std::atomic<bool> spinning{false};
    std::uint64_t received = 0;
    std::thread consumer([&] {
      pin_this_thread(c.cpu_consumer);
      spinning.store(true);
      Msg<64> m{};
      std::uint64_t i = 0;
      while (i < c.events) {
        const std::size_t n = w.poll(
            [&](const Event& e) {
              std::memcpy(&m, e.payload().data(), sizeof m);
              consume_bytes(&m);
              const std::uint64_t now = end_ticks();
              if (i >= c.warmup) h.record(now - m.stamp);
              ++i;
            },
            64);
        if (n == 0 && gone_.load(std::memory_order_relaxed)) break;
      }
      received = i;
    });
    while (!spinning.load()) {
    }
    const Command go{c.events, c.gap_ticks};
    const bool sent = ::send(cmd_, &go, sizeof go, MSG_NOSIGNAL) == sizeof go;
    consumer.join();
    char done = 0;
    if (!sent || received < c.events || ::read(ack_, &done, 1) != 1) {
      gone_.wait(false, std::memory_order_acquire);
      throw std::runtime_error(fmt::format("the process scenario's producer process {} after {} of {} events",
                                           describe_exit(status_), received, c.events));
    }
  }

 private:
  struct Command {
    std::uint64_t events;
    std::uint64_t gap_ticks;
  };

  // The producer process dies with the benchmark: with the consumer gone, a full ring
  // would keep it spinning forever.
  // It uses the segment's mapping it inherits; reading every page first spares its first
  // lap the faults of a forked mapping (Segment::touch_pages), as an open would.
  [[noreturn]] static void child(const Segment& seg, pid_t bench, int cpu, int cmd, int ack) {
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != bench) ::_exit(8);
    try {
      pin_this_thread(cpu);
      seg.touch_pages();
      Producer p = Producer::attach(seg, kBenchProducer);
      const char attached = 1;
      if (::write(ack, &attached, 1) != 1) ::_exit(2);
      Command c{};
      while (::read(cmd, &c, sizeof c) == sizeof c && c.events != 0) {
        send_paced<64>(c.events, c.gap_ticks, [&](const Msg<64>& m, std::uint64_t) { publish_copy(p, 0, m); });
        const char done = 1;
        if (::write(ack, &done, 1) != 1) ::_exit(2);
      }
    } catch (...) {
      ::_exit(3);
    }
    ::_exit(0);
  }

  BenchSegment segment_;
  ConsumerGroup group_;
  pid_t child_ = -1;
  int cmd_ = -1;
  int ack_ = -1;
  std::thread reaper_;
  std::atomic<bool> gone_{false};
  int status_ = 0;  // the producer process's wait status, once gone_
};

// Round trip through two segments: A publishes to `there`, B consumes it and publishes
// it back to `back`, A consumes the reply.
class RingbusRoundTrip final : public LatencySystem {
 public:
  RingbusRoundTrip()
      : there_(ring_for(64)),
        back_(ring_for(64)),
        there_group_(ConsumerGroup::join(there_.seg, "ping", bench_group())),
        back_group_(ConsumerGroup::join(back_.seg, "pong", bench_group())),
        there_producer_(Producer::attach(there_.seg, kBenchProducer)),
        back_producer_(Producer::attach(back_.seg, kBenchProducer)) {}
  [[nodiscard]] std::string name() const override { return "ringbus"; }
  void run_chunk(const Chunk& c, Histogram& h) override {
    Worker& ping = there_group_.worker(0);
    Worker& pong = back_group_.worker(0);
    run_pinned(
        c.cpu_producer, c.cpu_consumer,
        [&] {
          Msg<64> r{};
          send_paced<64>(c.events, c.gap_ticks, [&](const Msg<64>& m, std::uint64_t i) {
            publish_copy(there_producer_, 0, m);
            bool got = false;
            while (!got) {
              pong.poll(
                  [&](const Event& e) {
                    std::memcpy(&r, e.payload().data(), sizeof r);
                    consume_bytes(&r);
                    got = true;
                  },
                  1);
            }
            const std::uint64_t now = end_ticks();
            if (i >= c.warmup) h.record(now - r.stamp);
          });
        },
        [&] {
          Msg<64> m{};
          std::uint64_t i = 0;
          while (i < c.events) {
            ping.poll(
                [&](const Event& e) {
                  std::memcpy(&m, e.payload().data(), sizeof m);
                  consume_bytes(&m);
                  publish_copy(back_producer_, 0, m);
                  ++i;
                },
                1);
          }
        });
  }

 private:
  BenchSegment there_;
  BenchSegment back_;
  ConsumerGroup there_group_;
  ConsumerGroup back_group_;
  Producer there_producer_;
  Producer back_producer_;
};

template <std::size_t N>
std::vector<std::unique_ptr<LatencySystem>> one_way_with_peers(bool rtt) {
  std::vector<std::unique_ptr<LatencySystem>> s;
  s.push_back(std::make_unique<Floor>(rtt));
  if (!rtt) s.push_back(std::make_unique<FloorOneWay>());
  if (rtt) {
    s.push_back(std::make_unique<RingbusRoundTrip>());
  } else {
    s.push_back(std::make_unique<RingbusOneWay<N>>(0, 0, -1));
  }
  s.push_back(std::make_unique<Peer<BoostOps<N>, N>>(rtt));
  s.push_back(std::make_unique<Peer<MoodycamelOps<N>, N>>(rtt));
  s.push_back(std::make_unique<Peer<AtomicQueueOps<N>, N>>(rtt));
  return s;
}

}  // namespace

// A probe times one cache line's trip between the two CPUs, which no pacing changes, so
// it is paced at most kProbeGapNs apart: at a gap of a second (--gap-ns allows it) the
// 20,000 samples of one probe would take five and a half hours.
constexpr std::uint64_t kProbeGapNs = 2000;

double probe_floor(const Options& o, std::uint64_t samples) {
  Floor floor(false);
  Histogram h;
  const std::uint64_t gap = Tsc::from_ns(std::min(o.gap_ns, kProbeGapNs));
  const std::uint64_t warmup = std::min<std::uint64_t>(1000, samples / 5);
  floor.run_chunk({o.cpu_producer, o.cpu_consumer, samples + warmup, warmup, gap}, h);
  return static_cast<double>(h.percentile(50)) * Tsc::ns_per_tick();
}

// The scenarios judged against thread-to-thread ringbus carry that configuration as
// `ringbus_thread`, and the floor, interleaved with theirs: the vCPUs' placement can
// change between scenarios (RTT/2 70 <-> 230 ns), which would make a ratio across
// scenarios meaningless.
std::vector<std::unique_ptr<LatencySystem>> with_thread_reference(std::unique_ptr<LatencySystem> measured) {
  std::vector<std::unique_ptr<LatencySystem>> s;
  s.push_back(std::make_unique<Floor>(false));
  s.push_back(std::move(measured));
  s.push_back(std::make_unique<RingbusOneWay<64>>(0, 0, -1, "ringbus_thread"));
  return s;
}

std::vector<LatencyScenario> latency_scenarios() {
  return {
      {"thread", 64, "one-way, thread to thread, 64-byte events", 6,
       [](const Options&) { return one_way_with_peers<64>(false); }},
      {"thread", 1024, "one-way, thread to thread, 1 KiB events", 6,
       [](const Options&) { return one_way_with_peers<1024>(false); }},
      {"process", 64, "one-way, producer in another process", 3,
       [](const Options& o) { return with_thread_reference(std::make_unique<RingbusProcess>(o.cpu_producer)); }},
      {"fanout4", 64, "one-way, 4 gating groups: 1 measured, 3 parked consumers keeping up", 3,
       [](const Options& o) {
         return with_thread_reference(std::make_unique<RingbusOneWay<64>>(0, 3, o.cpu_producer));
       }},
      {"keys10k", 64, "one-way, per-key sequencing over 10,000 keys", 3,
       [](const Options&) { return with_thread_reference(std::make_unique<RingbusOneWay<64>>(10'000, 0, -1)); }},
      {"rtt", 64, "round trip, ping-pong through two queues", 5,
       [](const Options&) { return one_way_with_peers<64>(true); }},
  };
}

void claim_refused_for_good(Status s, std::size_t bytes) noexcept {
  const std::string_view why = to_string(s);
  std::fprintf(stderr, "ringbus: bench: a ringbus claim of %zu bytes was refused (%.*s), which no retry can cure\n",
               bytes, static_cast<int>(why.size()), why.data());
  std::_Exit(1);
}

}  // namespace ringbus::bench
