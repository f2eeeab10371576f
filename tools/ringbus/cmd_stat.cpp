// ringbus stat NAME [--watch] [--interval S] [--prometheus]
//
// Counters, per-group lag, dead-letter depth, back-pressure and the publish-to-handle
// latency histogram of groups that record it; --watch redraws in place with rates,
// --prometheus prints the Prometheus text exposition format (version 0.0.4).
#include <fmt/format.h>
#include <poll.h>
#include <signal.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <string>

#include "common.hpp"
#include "ringbus/layout.hpp"
#include "ringbus/stats.hpp"

namespace ringbus::tool {
namespace {

volatile std::sig_atomic_t g_stop = 0;
void on_stop(int) { g_stop = 1; }

// A label value in the exposition format: control bytes (a name comes from shared
// memory, untrusted) written as \xHH by printable(), then backslash and double quote
// escaped (printable() leaves no newline to escape).
std::string label(std::string_view raw) {
  const std::string v = printable(raw);
  std::string out;
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else out += c;
  }
  return out;
}

std::string ns_text(std::uint64_t ns) {
  if (ns < 10'000) return fmt::format("{} ns", ns);
  if (ns < 10'000'000) return fmt::format("{:.1f} us", static_cast<double>(ns) / 1e3);
  return fmt::format("{:.1f} ms", static_cast<double>(ns) / 1e6);
}

class Prometheus {
 public:
  explicit Prometheus(std::string segment) : seg_(label(segment)) {}
  // Starts a metric family: # HELP and # TYPE once.
  void family(std::string_view name, std::string_view type, std::string_view help) {
    out_ += fmt::format("# HELP ringbus_{} {}\n# TYPE ringbus_{} {}\n", name, help, name, type);
  }
  void sample(std::string_view name, std::string_view labels, std::uint64_t v) {
    out_ += fmt::format("ringbus_{}{{segment=\"{}\"{}{}}} {}\n", name, seg_, labels.empty() ? "" : ",", labels, v);
  }
  void sample(std::string_view name, std::string_view labels, double v) {
    out_ += fmt::format("ringbus_{}{{segment=\"{}\"{}{}}} {}\n", name, seg_, labels.empty() ? "" : ",", labels, v);
  }
  [[nodiscard]] const std::string& text() const noexcept { return out_; }

 private:
  std::string seg_;
  std::string out_;
};

// One series family of a per-group or per-worker statistic.
template <class Stats>
struct Metric {
  const char* name;
  const char* type;
  const char* help;
  std::uint64_t Stats::*field;
};

std::string prometheus_text(const Segment& seg, const SegmentStats& s) {
  Prometheus p(seg.location().display());
  auto one = [&](std::string_view name, std::string_view type, std::string_view help, std::uint64_t v) {
    p.family(name, type, help);
    p.sample(name, "", v);
  };
  one("published_events_total", "counter", "Events published (producer slots still holding their count).",
      s.published);
  one("tail_position_bytes", "gauge", "Log position of the next claim.", s.tail);
  one("capacity_bytes", "gauge", "Bytes in the log ring.", s.capacity);
  one("back_pressure_total", "counter", "Claims refused or delayed because a gating group was a ring behind.",
      s.back_pressure);
  one("keys_used", "gauge", "Keys in the per-key sequencing table.", s.keys_used);
  one("key_slots", "gauge", "Slots in the per-key sequencing table.", s.key_slots);
  one("producers_recovered_total", "counter", "Dead producers whose claims were recovered.", s.producers_recovered);
  one("holes_padded_total", "counter", "Claims of dead producers turned into padding.", s.holes_padded);
  one("records_voided_total", "counter", "Claims of dead producers turned into void records.", s.records_voided);
  one("latches_released_total", "counter", "Key latches taken back from dead or stalled producers.",
      s.latches_released);
  p.family("longest_stall_seconds", "gauge", "Longest time a worker waited on a dead producer's claim.");
  p.sample("longest_stall_seconds", "", static_cast<double>(s.longest_stall_ns) / 1e9);
  one("stalls_unresolved_total", "counter", "Reader stalls past unblock_after that recovery could not end.",
      s.stalls_unresolved);

  p.family("producer_published_events_total", "counter", "Events published by one producer slot.");
  for (const ProducerStats& pr : s.producers) {
    p.sample("producer_published_events_total",
             fmt::format("producer_id=\"{}\",slot=\"{}\",state=\"{}\"", pr.producer_id, pr.slot, label(pr.state)),
             pr.published);
  }
  static constexpr Metric<GroupStats> kGroup[] = {
      {"group_lag_bytes", "gauge", "Bytes between the tail and the group's slowest worker.", &GroupStats::lag_bytes},
      {"group_cursor_bytes", "gauge", "Log position of the group's slowest worker.", &GroupStats::cursor},
      {"group_consumed_events_total", "counter", "Events the group's handlers accepted.", &GroupStats::consumed},
      {"dlq_entries", "gauge", "Entries in the group's dead-letter ring.", &GroupStats::dead_letters},
      {"dlq_bytes", "gauge", "Bytes used in the group's dead-letter ring.", &GroupStats::dlq_bytes},
      {"dlq_capacity_bytes", "gauge", "Size of the group's dead-letter ring.", &GroupStats::dlq_capacity},
      {"dlq_full_waits_total", "counter", "Times a worker found the dead-letter ring full and waited.",
       &GroupStats::dlq_full_waits},
      {"group_resumes_total", "counter", "Times a process joined the group after it was registered.",
       &GroupStats::resumes},
  };
  for (const Metric<GroupStats>& f : kGroup) {
    p.family(f.name, f.type, f.help);
    for (const GroupStats& g : s.groups) p.sample(f.name, fmt::format("group=\"{}\"", label(g.name)), g.*f.field);
  }
  p.family("group_workers", "gauge", "The group's workers.");
  for (const GroupStats& g : s.groups) p.sample("group_workers", fmt::format("group=\"{}\"", label(g.name)), std::uint64_t{g.workers});
  p.family("group_workers_running", "gauge",
           "The group's workers run by a live process; a group none runs still holds producers back.");
  for (const GroupStats& g : s.groups) {
    p.sample("group_workers_running", fmt::format("group=\"{}\"", label(g.name)), std::uint64_t{running_workers(g)});
  }
  static constexpr Metric<WorkerStats> kWorker[] = {
      {"worker_consumed_events_total", "counter", "Events the worker's handler accepted.", &WorkerStats::consumed},
      {"worker_handler_errors_total", "counter", "Failed handler attempts.", &WorkerStats::handler_errors},
      {"worker_retries_total", "counter", "Handler attempts after a failure.", &WorkerStats::retries},
      {"worker_dead_lettered_total", "counter", "Events parked in the dead-letter ring.", &WorkerStats::dead_lettered},
      {"worker_redelivered_total", "counter", "Events delivered again after a consumer died.",
       &WorkerStats::redelivered},
      {"worker_redriven_total", "counter", "Dead letters redelivered and accepted.", &WorkerStats::redriven},
      {"worker_dedup_evictions_total", "counter", "Producer windows the worker's dedup evicted for new producer ids.",
       &WorkerStats::dedup_evictions},
      {"worker_void_records_total", "counter", "Void records (events lost by a dead producer) passed over.",
       &WorkerStats::voids},
      {"worker_events_set_aside", "gauge",
       "Events the worker has set aside: waiting for a deferred retry, held behind a failure of their key, or "
       "waiting for dead-letter room.",
       &WorkerStats::pending},
      {"worker_lag_bytes", "gauge", "Bytes between the tail and the worker's cursor.", &WorkerStats::lag_bytes},
      {"worker_deaths_in_flight", "gauge",
       "Processes that died in a row handling the worker's event in flight, as the joins after them counted.",
       &WorkerStats::deaths_in_flight},
  };
  for (const Metric<WorkerStats>& f : kWorker) {
    p.family(f.name, f.type, f.help);
    for (const GroupStats& g : s.groups) {
      for (const WorkerStats& w : g.worker) {
        p.sample(f.name, fmt::format("group=\"{}\",worker=\"{}\"", label(g.name), w.index), w.*f.field);
      }
    }
  }
  p.family("worker_dropped_events_total", "counter", "Events dedup dropped before the handler, by reason.");
  for (const GroupStats& g : s.groups) {
    for (const WorkerStats& w : g.worker) {
      p.sample("worker_dropped_events_total",
               fmt::format("group=\"{}\",worker=\"{}\",reason=\"duplicate\"", label(g.name), w.index), w.dup_dropped);
      p.sample("worker_dropped_events_total",
               fmt::format("group=\"{}\",worker=\"{}\",reason=\"too_old\"", label(g.name), w.index),
               w.too_old_dropped);
    }
  }
  // The histogram: cumulative buckets at the log-linear edges that hold samples (and
  // +Inf), so a scrape stays small; edges are inclusive upper bounds in seconds.
  p.family("handle_latency_seconds", "histogram",
           "Publish-to-handle latency recorded by the group's workers (handler start minus publish timestamp).");
  for (const GroupStats& g : s.groups) {
    const std::uint64_t total = g.latency_samples();
    if (total == 0) continue;
    std::uint64_t seen = 0;
    for (std::uint32_t k = 0; k + 1 < g.latency.size(); ++k) {
      if (g.latency[k] == 0) continue;
      seen += g.latency[k];
      p.sample("handle_latency_seconds_bucket",
               fmt::format("group=\"{}\",le=\"{:.9g}\"", label(g.name),
                           static_cast<double>(layout::latency_bucket_upper(k) + 1) / 1e9),
               seen);
    }
    p.sample("handle_latency_seconds_bucket", fmt::format("group=\"{}\",le=\"+Inf\"", label(g.name)), total);
    p.sample("handle_latency_seconds_sum", fmt::format("group=\"{}\"", label(g.name)),
             static_cast<double>(g.latency_sum_ns) / 1e9);
    p.sample("handle_latency_seconds_count", fmt::format("group=\"{}\"", label(g.name)), total);
  }
  return p.text();
}

struct Rates {
  double published = 0;
  std::vector<double> consumed;  // per group, same order as SegmentStats::groups
};

std::string text_view(const Segment& seg, const SegmentStats& s, const Rates* rates) {
  std::string out;
  auto line = [&](std::string text) {
    out += text;
    out += '\n';
  };
  line(fmt::format("segment {}  tail {}  lap {}  capacity {}", seg.location().display(), with_commas(s.tail),
                   with_commas(s.tail / std::max<std::uint64_t>(s.capacity, 1)), human_bytes(s.capacity)));
  line(fmt::format("published {}{}  back-pressure {}  keys {}/{}{}", with_commas(s.published),
                   rates ? fmt::format(" ({:.0f}/s)", rates->published) : "", with_commas(s.back_pressure),
                   with_commas(s.keys_used), with_commas(s.key_slots), key_table_warning(s.keys_used, s.key_slots)));
  line(fmt::format("recovery: producers {}  holes padded {}  voided {}  latches released {}  longest stall {}  "
                   "stalls unresolved {}",
                   s.producers_recovered, s.holes_padded, s.records_voided, s.latches_released,
                   ns_text(s.longest_stall_ns), s.stalls_unresolved));
  line("");
  line(fmt::format("{:<20} {:>7} {:>12} {:>8} {:>14} {:>12} {:>9} {:>9} {:>9} {:>9} {:>9}", "GROUP", "RUNNING",
                   "LAG", "LAG%", "CONSUMED", "RATE/s", "DLQ", "DLQ-FULL", "LAT p50", "p99", "p99.9"));
  for (std::size_t i = 0; i < s.groups.size(); ++i) {
    const GroupStats& g = s.groups[i];
    const bool lat = g.latency_samples() != 0;
    line(fmt::format("{:<20} {:>7} {:>12} {:>7.1f}% {:>14} {:>12} {:>9} {:>9} {:>9} {:>9} {:>9}", printable(g.name),
                     fmt::format("{}/{}", running_workers(g), g.workers),
                     human_bytes(g.lag_bytes),
                     100.0 * static_cast<double>(g.lag_bytes) / static_cast<double>(std::max<std::uint64_t>(s.capacity, 1)),
                     with_commas(g.consumed),
                     rates && i < rates->consumed.size() ? fmt::format("{:.0f}", rates->consumed[i]) : "-",
                     g.dlq_capacity ? with_commas(g.dead_letters) : "-", with_commas(g.dlq_full_waits),
                     lat ? ns_text(g.latency_percentile(50)) : "-", lat ? ns_text(g.latency_percentile(99)) : "-",
                     lat ? ns_text(g.latency_percentile(99.9)) : "-"));
  }
  for (const GroupStats& g : s.groups) {
    std::uint64_t errors = 0, retries = 0, dead = 0, dup = 0, old = 0, evicted = 0, redelivered = 0, redriven = 0;
    std::uint64_t set_aside = 0, deaths = 0;  // deaths: the most of any worker's event in flight
    for (const WorkerStats& w : g.worker) {
      set_aside += w.pending;
      deaths = std::max(deaths, w.deaths_in_flight);
      errors += w.handler_errors;
      retries += w.retries;
      dead += w.dead_lettered;
      dup += w.dup_dropped;
      old += w.too_old_dropped;
      evicted += w.dedup_evictions;
      redelivered += w.redelivered;
      redriven += w.redriven;
    }
    if (errors + retries + dead + dup + old + evicted + redelivered + redriven + set_aside + deaths == 0) continue;
    line(fmt::format("  {}: handler errors {}  retries {}  dead-lettered {}  dedup dropped {} (+{} too old, {} "
                     "producers evicted)  redelivered {}  redriven {}{}{}",
                     printable(g.name), with_commas(errors), with_commas(retries), with_commas(dead), with_commas(dup),
                     with_commas(old), with_commas(evicted), with_commas(redelivered), with_commas(redriven),
                     set_aside != 0 ? "  set aside " + with_commas(set_aside) : std::string(),
                     deaths != 0 ? fmt::format("  died in flight {} in a row", deaths) : std::string()));
  }
  for (const GroupStats& g : s.groups) {
    const std::uint64_t total = g.latency_samples();
    if (total == 0) continue;
    line(fmt::format("  {}: latency over {} samples: mean {}  p50 {}  p90 {}  p99 {}  p99.99 {}  max <= {}",
                     printable(g.name),
                     with_commas(total), ns_text(g.latency_sum_ns / total), ns_text(g.latency_percentile(50)),
                     ns_text(g.latency_percentile(90)), ns_text(g.latency_percentile(99)),
                     ns_text(g.latency_percentile(99.99)), ns_text(g.latency_percentile(100))));
  }
  return out;
}

}  // namespace

void add_stat_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand(
      "stat", "Counters, per-group lag, dead-letter depth, back-pressure and recorded latency");
  auto arg = std::make_shared<SegmentArg>();
  arg->add_to(cmd);
  auto watch = std::make_shared<bool>(false);
  auto interval = std::make_shared<double>(1.0);
  auto prometheus = std::make_shared<bool>(false);
  auto count = std::make_shared<std::uint64_t>(0);
  CLI::Option* watching = cmd->add_flag("--watch,-w", *watch, "Redraw in place, like top, until q or Ctrl-C");
  // Without --watch they were ignored: `stat SEG --count 5` printed once.
  cmd->add_option("--interval", *interval, "Seconds between refreshes with --watch (default 1)")
      ->check(seconds_between(0.05, 3600.0))
      ->needs(watching);
  add_number(cmd, "--count", *count, "With --watch: stop after this many refreshes (0, the default: until q or Ctrl-C)")
      ->needs(watching);
  cmd->add_flag("--prometheus", *prometheus, "Print the Prometheus text exposition format");
  cmd->callback([=, &exit_code] {
    const Segment seg = arg->look(true);
    if (!*watch) {
      const SegmentStats s = read_stats(seg);
      const std::string text = *prometheus ? prometheus_text(seg, s) : text_view(seg, s, nullptr);
      write_out(text);  // a failure is reported by finish_output
      exit_code = kOk;
      return;
    }
    struct sigaction sa {};
    sa.sa_handler = on_stop;
    ::sigaction(SIGINT, &sa, nullptr);
    ::sigaction(SIGTERM, &sa, nullptr);
    const bool tty = ::isatty(STDOUT_FILENO) != 0;
    // Keys without Enter: the terminal leaves canonical mode while watching.
    struct RawInput {
      termios saved{};
      bool active = false;
      RawInput() {
        if (::isatty(STDIN_FILENO) == 0 || ::tcgetattr(STDIN_FILENO, &saved) != 0) return;
        termios raw = saved;
        raw.c_lflag &= ~static_cast<tcflag_t>(ICANON | ECHO);
        active = ::tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
      }
      ~RawInput() {
        if (active) ::tcsetattr(STDIN_FILENO, TCSANOW, &saved);
      }
    } raw_input;
    SegmentStats prev = read_stats(seg);
    auto prev_at = std::chrono::steady_clock::now();
    NameWatch names(seg);
    exit_code = kOk;
    for (std::uint64_t n = 0; g_stop == 0 && (*count == 0 || n < *count); ++n) {
      // Wait for the interval, or for q on a terminal's standard input.
      pollfd pfd{STDIN_FILENO, POLLIN, 0};
      const int ready = ::poll(&pfd, raw_input.active ? 1 : 0, static_cast<int>(*interval * 1000));
      if (ready > 0) {
        char c = 0;
        if (::read(STDIN_FILENO, &c, 1) == 1 && (c == 'q' || c == 'Q')) break;
      }
      const SegmentStats s = read_stats(seg);
      const auto now = std::chrono::steady_clock::now();
      const double dt = std::max(1e-9, std::chrono::duration<double>(now - prev_at).count());
      Rates rates;
      rates.published = static_cast<double>(s.published - std::min(s.published, prev.published)) / dt;
      for (const GroupStats& g : s.groups) {
        double r = 0;
        for (const GroupStats& pg : prev.groups) {
          if (pg.slot == g.slot && pg.name == g.name) r = static_cast<double>(g.consumed - std::min(g.consumed, pg.consumed)) / dt;
        }
        rates.consumed.push_back(r);
      }
      std::string text = *prometheus ? prometheus_text(seg, s) : text_view(seg, s, &rates);
      if (tty) text = "\33[H\33[2J" + text + "\n(q or Ctrl-C to quit)\n";
      else text += '\n';
      if (!write_out(text) || !flush_out()) break;  // finish_output tells why
      prev = s;
      prev_at = now;
      if (const int end = end_if_unnamed(names, "stat"); end >= 0) {
        exit_code = end;
        break;
      }
    }
  });
}

}  // namespace ringbus::tool
