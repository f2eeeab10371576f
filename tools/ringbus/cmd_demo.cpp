// ringbus demo: one segment, a consumer group with one pinned worker, and a producer
// in a second process publishing paced events; prints counts and publish-to-handle
// latency. The producer stamps the TSC just before it claims; the worker reads it
// when its handler runs (the TSC is shared by every core of the machine).
#include <fmt/format.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <csignal>
#include <cstring>
#include <thread>
#include <vector>

#include "common.hpp"
#include "ringbus/clock.hpp"
#include "ringbus/consumer.hpp"
#include "ringbus/producer.hpp"
#include "ringbus/stats.hpp"
#include "ringbus_bench/bench.hpp"
#include "ringbus_bench/histogram.hpp"

namespace ringbus::tool {
namespace {

struct DemoEvent {
  std::uint64_t stamp;  // Tsc::ticks() just before the claim
  std::uint64_t n;
};

// The producer process, forked after the segment was created: attaches a producer to the
// mapping it inherits (read page by page first, as an open would: Segment::touch_pages),
// says so on `attached_fd`, and publishes once `go_fd` says go. It dies with the demo:
// with the consumer gone, a full ring would keep it spinning forever.
[[noreturn]] void run_producer(const Segment& seg, pid_t demo, int cpu, std::uint64_t events, std::uint64_t keys,
                               std::uint64_t gap_ns, int attached_fd, int go_fd) {
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != demo) ::_exit(8);
  try {
    if (cpu >= 0) pin_this_thread(cpu);
    seg.touch_pages();
    Producer p = Producer::attach(seg, {.wait = WaitStrategy::busy_spin()});
    const char attached = 1;
    char go = 0;
    if (::write(attached_fd, &attached, 1) != 1 || ::read(go_fd, &go, 1) != 1) ::_exit(5);
    const std::uint64_t gap_ticks = Tsc::from_ns(gap_ns);
    std::uint64_t next = Tsc::ticks();
    for (std::uint64_t i = 0; i < events; ++i) {
      std::uint64_t now = Tsc::ticks();
      while (now < next) now = Tsc::ticks();
      next = std::max(next + gap_ticks, now);
      Claim c;
      const DemoEvent e{Tsc::ticks(), i};
      if (const Status s = p.claim(1 + i % keys, 1, sizeof e, c); s != Status::ok) {
        print_err("ringbus demo: the producer's claim of event {} (key {}) was refused: {}\n", i,
                  1 + i % keys, to_string(s));
        ::_exit(6);
      }
      std::memcpy(c.payload().data(), &e, sizeof e);
      c.commit();
    }
  } catch (...) {
    ::_exit(7);
  }
  ::_exit(0);
}

}  // namespace

// The most keys a demo sequences: its key table (2^25 slots) is 512 MiB.
constexpr std::uint64_t kMaxDemoKeys = std::uint64_t{1} << 24;

void add_demo_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand(
      "demo", "Publish events from a second process to a pinned consumer group; print counts and latency");
  struct Opts {
    std::uint64_t events = 1'000'000;
    std::uint64_t keys = 1000;
    std::uint64_t gap_ns = 1000;
    std::uint64_t warmup = 10'000;
    std::string cpus = "0,1";
  };
  auto o = std::make_shared<Opts>();
  add_number(cmd, "--events", o->events, "Events to publish (default 1000000)", 1);
  add_number(cmd, "--keys", o->keys, "Distinct keys, round robin (default 1000, at most 16,777,216)", 1);
  add_number(cmd, "--gap-ns", o->gap_ns, "Pacing between events in ns (default 1000, at most 1 s)");
  add_number(cmd, "--warmup", o->warmup, "Events left out of the latency figures (default 10000)");
  cmd->add_option("--cpus", o->cpus, "Producer CPU,consumer CPU (default 0,1)");
  cmd->callback([o, &exit_code] {
    const std::vector<int> cpus = parse_cpus(o->cpus);
    if (cpus.size() != 2) throw CLI::ValidationError("--cpus", "give two CPUs: producer,consumer");
    if (o->gap_ns > bench::kMaxGapNs) {
      throw CLI::ValidationError("--gap-ns", fmt::format("{} ns is more than 1 s, the longest pacing gap", o->gap_ns));
    }
    if (o->keys > kMaxDemoKeys) {
      throw CLI::ValidationError("--keys", fmt::format("{} is more than the demo's {} keys", with_commas(o->keys),
                                                       with_commas(kMaxDemoKeys)));
    }
    if (std::string why = bench::check_cpus(cpus[0], cpus[1]); !why.empty()) throw CLI::ValidationError("--cpus", why);
    if (o->warmup >= o->events) {
      throw CLI::ValidationError("--warmup", "leaves no event to measure: it must be less than --events");
    }
    // Anonymous: the producer process shares it by fork, and a demo interrupted even by
    // SIGKILL leaves nothing in /dev/shm.
    // A key table of 1.5 x the keys or more, which holds them all (DESIGN.md, "When the table fills").
    const auto key_slots = static_cast<std::uint32_t>(std::max<std::uint64_t>(1u << 16, std::bit_ceil(o->keys * 3 / 2)));
    const Segment seg = Segment::create(Location::anonymous("ringbus-demo"),
                                        {.capacity = 16u << 20, .max_event = 1024, .key_slots = key_slots});

    GroupOptions group_options;
    group_options.cpus = {cpus[1]};
    group_options.wait = WaitStrategy::busy_spin();
    ConsumerGroup group = ConsumerGroup::join(seg, "demo", group_options);
    int go[2], attached[2];
    if (::pipe(go) != 0 || ::pipe(attached) != 0) throw std::runtime_error("pipe failed");
    const pid_t demo = ::getpid();
    const pid_t child = ::fork();
    if (child < 0) throw std::runtime_error("fork failed");
    if (child == 0) {
      ::close(go[1]);
      ::close(attached[0]);
      run_producer(seg, demo, cpus[0], o->events, o->keys, o->gap_ns, attached[1], go[0]);
    }
    ::close(go[0]);
    ::close(attached[1]);
    char ack = 0;
    const bool producer_attached = ::read(attached[0], &ack, 1) == 1;
    ::close(attached[0]);

    (void)Tsc::calibration();
    bench::Histogram latency;
    std::vector<std::uint64_t> last_seq(o->keys + 1, 0);
    std::uint64_t consumed = 0, order_errors = 0, bad = 0, last_n = 0;
    std::atomic<std::uint64_t> done{0};
    const std::uint64_t warmup = o->warmup;
    group.start([&](const Event& e) {
      DemoEvent d{};
      std::memcpy(&d, e.payload().data(), sizeof d);
      const std::uint64_t now = Tsc::ticks_after_loads();
      if (consumed >= warmup) latency.record(Tsc::to_ns(now - d.stamp));
      if (e.key() == 0 || e.key() > last_seq.size() - 1 || e.key_seq() != last_seq[e.key()] + 1) ++order_errors;
      if (e.key() < last_seq.size()) last_seq[e.key()] = e.key_seq();
      if (consumed > 0 && d.n != last_n + 1) ++bad;
      last_n = d.n;
      ++consumed;
      done.store(consumed, std::memory_order_release);
    });
    const char start = 1;
    // A producer that could not attach has exited: its status is reported below.
    if (producer_attached && ::write(go[1], &start, 1) != 1) throw std::runtime_error("cannot start the producer");
    ::close(go[1]);
    int status = 0;
    ::waitpid(child, &status, 0);
    const bool producer_ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    // A producer that failed publishes no more: waiting for the rest would only delay the report.
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(producer_ok ? 30 : 0);
    while (done.load(std::memory_order_acquire) < o->events && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    group.stop();
    const SegmentStats s = read_stats(seg);

    fmt::print("ringbus demo: segment {}, producer pid {} on cpu {}, group \"demo\" worker on cpu {}\n",
               seg.location().display(), child, cpus[0], cpus[1]);
    fmt::print("  published {}  consumed {}  keys {}  key order errors {}  out-of-order events {}  lost {}\n",
               with_commas(s.published), with_commas(consumed), with_commas(s.keys_used), order_errors, bad,
               with_commas(s.published - std::min(s.published, consumed)));
    fmt::print("  publish-to-handle latency over {} events ({} warm-up events left out), paced every {} ns:\n",
               with_commas(latency.count()), with_commas(std::min(warmup, consumed)), o->gap_ns);
    fmt::print("    p50 {} ns   p90 {} ns   p99 {} ns   p99.9 {} ns   max {} ns\n", latency.percentile(50),
               latency.percentile(90), latency.percentile(99), latency.percentile(99.9), latency.max());
    if (!Tsc::invariant()) fmt::print("  (timestamps from {})\n", Tsc::describe(Tsc::source()));
    const bool ok = producer_ok && consumed == o->events && s.published == o->events && order_errors == 0 && bad == 0;
    if (!producer_ok) {
      print_err("ringbus demo: the producer process failed ({})\n",
                WIFSIGNALED(status) ? fmt::format("killed by signal {}", WTERMSIG(status))
                                    : fmt::format("exit status {}", WEXITSTATUS(status)));
    }
    exit_code = ok ? kOk : kFailed;
  });
}

}  // namespace ringbus::tool
