// ringbus create | info | rm
#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <charconv>

#include <ctime>

#include "common.hpp"
#include "ringbus/layout.hpp"
#include "ringbus/detail/process.hpp"
#include "ringbus/json.hpp"
#include "ringbus/stats.hpp"

namespace ringbus::tool {
namespace {

std::string time_text(std::uint64_t realtime_ns) {
  const std::time_t t = static_cast<std::time_t>(realtime_ns / 1'000'000'000ull);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

void print_info(const Segment& seg, bool json) {
  const SegmentStats s = read_stats(seg);
  const layout::SegmentHeader& h = seg.header();
  const bool creator_alive =
      !detail::process_dead(static_cast<std::uint32_t>(h.creator_pid), h.creator_start_ticks);
  // Opened read-only from another pid namespace: every pid below names a process of the
  // segment's namespace, and whether it is alive cannot be told from here.
  const bool other_namespace = detail::other_pid_namespace(h.pid_namespace);
  if (json) {
    fmt::print("{{\"segment\":{},\"other_pid_namespace\":{},\"version\":\"{}.{}\",\"capacity\":{},\"max_event\":{},\"tail\":{},"
               "\"published\":{},\"back_pressure\":{},\"keys_used\":{},\"key_slots\":{},\"total_size\":{},"
               "\"dlq_capacity\":{},\"dedup_window\":{},\"dedup_producers\":{},\"type_slots\":{},\"types_used\":{},"
               "\"producers_recovered\":{},\"holes_padded\":{},\"records_voided\":{},\"latches_released\":{},"
               "\"longest_stall_ns\":{},\"stalls_unresolved\":{},\"tsc_hz\":{},\"producer_slots\":{},\"group_slots\":{},"
               "\"producers\":[",
               json_string(seg.location().display()), other_namespace, h.version_major, h.version_minor, s.capacity,
               s.max_event, s.tail,
               s.published, s.back_pressure, s.keys_used, s.key_slots, s.total_size, s.dlq_capacity, s.dedup_window,
               s.dedup_producers, s.type_slots, s.types_used, s.producers_recovered, s.holes_padded,
               s.records_voided, s.latches_released, s.longest_stall_ns, s.stalls_unresolved, s.tsc_hz,
               seg.max_producers(), seg.max_groups());
    for (std::size_t i = 0; i < s.producers.size(); ++i) {
      const ProducerStats& p = s.producers[i];
      fmt::print("{}{{\"slot\":{},\"producer_id\":{},\"pid\":{},\"state\":\"{}\",\"alive\":{},\"exclusive\":{},"
                 "\"next_seq\":{},\"published\":{},\"full\":{},\"aborted\":{}}}",
                 i ? "," : "", p.slot, p.producer_id, p.pid, p.state, p.alive, p.exclusive, p.next_seq, p.published,
                 p.full, p.aborted);
    }
    fmt::print("],\"groups\":[");
    for (std::size_t i = 0; i < s.groups.size(); ++i) {
      const GroupStats& g = s.groups[i];
      fmt::print("{}{{\"name\":{},\"workers\":{},\"cursor\":{},\"lag_bytes\":{},\"consumed\":{},\"worker\":[",
                 i ? "," : "", json_string(g.name), g.workers, g.cursor, g.lag_bytes, g.consumed);
      for (std::size_t w = 0; w < g.worker.size(); ++w) {
        const WorkerStats& ws = g.worker[w];
        fmt::print("{}{{\"index\":{},\"pid\":{},\"state\":\"{}\",\"alive\":{},\"cursor\":{},\"lag_bytes\":{},"
                   "\"consumed\":{},\"voids\":{},\"handler_errors\":{},\"deaths_in_flight\":{},\"died_at\":{},"
                   "\"redeliver_until\":{}}}",
                   w ? "," : "", ws.index, ws.pid, ws.state, ws.alive, ws.cursor, ws.lag_bytes, ws.consumed,
                   ws.voids, ws.handler_errors, ws.deaths_in_flight,
                   ws.deaths_in_flight != 0 ? std::to_string(ws.died_at) : std::string("null"),
                   ws.redeliver_until != 0 ? std::to_string(ws.redeliver_until) : std::string("null"));
      }
      fmt::print("]}}");
    }
    fmt::print("]}}\n");
    return;
  }
  fmt::print("segment {}  layout {}.{}  created {} by pid {} ({})\n", seg.location().display(), h.version_major,
             h.version_minor, time_text(h.created_realtime_ns), h.creator_pid,
             other_namespace ? "in another pid namespace" : creator_alive ? "alive" : "exited");
  if (other_namespace) {
    fmt::print("  pid namespace {} (this process is in {}): opened read-only; the pids below are that namespace's, and "
               "whether they are alive is not known here\n",
               h.pid_namespace, detail::self_process().pid_namespace);
  }
  fmt::print("  capacity {}  max event {}  keys {}/{}{}  producer slots {}  group slots {}\n",
             human_bytes(s.capacity), human_bytes(s.max_event), with_commas(s.keys_used), with_commas(s.key_slots),
             key_table_warning(s.keys_used, s.key_slots), seg.max_producers(), seg.max_groups());
  fmt::print("  dead letters {}  dedup {}  event types {}  {} bytes in all\n",
             s.dlq_capacity == 0 ? std::string("none") : human_bytes(s.dlq_capacity) + " a group",
             s.dedup_window == 0 ? std::string("none")
                                 : fmt::format("window {} x {} producers a worker", with_commas(s.dedup_window),
                                               s.dedup_producers),
             s.type_slots == 0 ? std::string("none (no registry)")
                               : fmt::format("{}/{}", with_commas(s.types_used), with_commas(s.type_slots)),
             with_commas(s.total_size));
  fmt::print("  tail {} (lap {})  published {}  back-pressure {}\n", with_commas(s.tail),
             with_commas(s.tail / s.capacity), with_commas(s.published), with_commas(s.back_pressure));
  fmt::print("  recovery: producers {}  holes padded {}  records voided {}  latches released {}  longest stall "
             "{:.1f} ms  stalls unresolved {}\n",
             s.producers_recovered, s.holes_padded, s.records_voided, s.latches_released,
             static_cast<double>(s.longest_stall_ns) / 1e6, s.stalls_unresolved);
  fmt::print("  clock: {}\n", s.tsc_hz == 0 ? std::string("no TSC rate shared yet")
                                            : fmt::format("TSC rate {:.6f} GHz shared by the process that measured it",
                                                          static_cast<double>(s.tsc_hz) / 1e9));
  const auto excl =
      std::find_if(s.producers.begin(), s.producers.end(), [](const ProducerStats& p) { return p.exclusive; });
  fmt::print("producers ({}{})\n", s.producers.size(),
             excl == s.producers.end() ? "" : fmt::format(", slot {} exclusive", excl->slot));
  if (!s.producers.empty()) {
    fmt::print("  {:>4}  {:>10}  {:>8}  {:<10}  {:>12}  {:>12}  {:>8}\n", "slot", "id", "pid", "state", "next_seq",
               "published", "full");
  }
  for (const ProducerStats& p : s.producers) {
    fmt::print("  {:>4}  {:>10}  {:>8}  {:<10}  {:>12}  {:>12}  {:>8}\n", p.slot, p.producer_id, p.pid,
               p.state + (p.alive || p.state != "active" ? "" : "!"), with_commas(p.next_seq),
               with_commas(p.published), with_commas(p.full));
  }
  fmt::print("groups ({})\n", s.groups.size());
  for (const GroupStats& g : s.groups) {
    fmt::print("  {}  workers {}  cursor {}  lag {}  consumed {}\n", printable(g.name), g.workers, with_commas(g.cursor),
               human_bytes(g.lag_bytes), with_commas(g.consumed));
    for (const WorkerStats& w : g.worker) {
      fmt::print("    worker {:>2}  pid {:>8}  {:<9}  cursor {:>14}  lag {:>10}  consumed {:>12}  voids {}  errors {}{}\n",
                 w.index, w.pid, w.alive ? "running" : w.state == "active" ? "dead" : "idle", with_commas(w.cursor),
                 human_bytes(w.lag_bytes), with_commas(w.consumed), w.voids, w.handler_errors,
                 w.deaths_in_flight == 0
                     ? std::string()
                     : fmt::format("  died handling position {}: {} time{} in a row", w.died_at,
                                   w.deaths_in_flight, w.deaths_in_flight == 1 ? "" : "s"));
      // What the next process delivers again, marked (a live worker's window is its own).
      if (!w.alive && w.redeliver_until != 0) {
        fmt::print("      the next process delivers again, marked redelivered, the events that start in [{}, {}): "
                   "its last process may have handled them\n",
                   with_commas(w.cursor), with_commas(w.redeliver_until));
      }
    }
    // Run by nobody, nothing moves it: a lap behind, it holds every producer back.
    if (running_workers(g) == 0 && g.lag_bytes != 0) {
      fmt::print("    run by nobody, {}% of a lap behind: it holds producers back once the log is a lap ahead of it; "
                 "if it is retired, `ringbus group {} {} rm` unregisters it, or `skip --to end` moves it past the "
                 "backlog\n",
                 g.lag_bytes * 100 / s.capacity,
                 segment_argument(seg),
                 printable(g.name));
    }
  }
}

}  // namespace

void add_segment_commands(CLI::App& app, int& exit_code) {
  {
    auto* cmd = app.add_subcommand("create", "Create a segment");
    auto arg = std::make_shared<SegmentArg>();
    arg->add_to(cmd, false);
    auto capacity = std::make_shared<std::string>("16M");
    auto max_event = std::make_shared<std::string>("64K");
    auto mode = std::make_shared<std::string>("0600");
    auto opts = std::make_shared<SegmentOptions>();
    auto replace = std::make_shared<bool>(false);
    cmd->add_option("--capacity", *capacity, "Log bytes, a power of two (default 16M)");
    cmd->add_option("--max-event", *max_event, "Largest payload (default 64K)");
    cmd->add_option("--mode", *mode, "Permission bits, octal (default 0600)");
    add_number(cmd, "--max-producers", opts->max_producers, "Producer slots (default 64)");
    add_number(cmd, "--max-groups", opts->max_groups, "Consumer group slots (default 16)");
    add_number(cmd, "--keys", opts->key_slots,
                    "Key table slots, a power of two (default 65536); plan 1.5 x the distinct keys: new keys may be "
                    "refused from about 80% use");
    auto dlq = std::make_shared<std::string>();
    cmd->add_option("--dlq", *dlq,
                    "Dead-letter ring bytes per group, a power of two, or 0 for none (default 256K, or enough for "
                    "two events of --max-event)")
        ->check(non_empty("give a size, or 0 for none"));
    add_number(cmd, "--dedup-window", opts->dedup_window, "Producer sequences remembered per dedup window (default "
                                                          "1024; 0: no dedup region)");
    add_number(cmd, "--types", opts->registry_slots, "Event types the schema registry holds (default 256)");
    cmd->add_flag("--replace", *replace, "Replace an existing segment of that name");
    cmd->callback([=, &exit_code] {
      SegmentOptions o = *opts;
      o.capacity = parse_size("--capacity", *capacity);
      const std::uint64_t max_ev = parse_size("--max-event", *max_event);
      if (max_ev > kMaxPayload) {
        throw CLI::ValidationError("--max-event", *max_event + " is more than the largest event a segment holds (" +
                                                      human_bytes(kMaxPayload) + ")");
      }
      o.max_event = static_cast<std::uint32_t>(max_ev);
      std::uint32_t bits = 0;
      const auto [rest, ec] = std::from_chars(mode->data(), mode->data() + mode->size(), bits, 8);
      if (mode->empty() || ec != std::errc{} || rest != mode->data() + mode->size() || bits > 0777) {
        throw CLI::ValidationError("--mode", "\"" + *mode + "\" is not octal permission bits such as 0600 or 0660");
      }
      o.mode = bits;
      if (!dlq->empty()) {
        o.dlq_capacity = parse_size("--dlq", *dlq);
      } else {
        const std::uint64_t two = 2 * layout::dlq_entry_bytes(o.max_event, layout::kMaxDlqMessage);
        o.dlq_capacity = std::max<std::uint64_t>(o.dlq_capacity, std::bit_ceil(two));
      }
      if (*replace) o.if_exists = SegmentOptions::IfExists::replace;
      const Segment seg = Segment::create(arg->location(), o);
      fmt::print("created {}: capacity {}, max event {}, {} bytes in all\n", seg.location().display(),
                 human_bytes(seg.capacity()), human_bytes(seg.max_event()), with_commas(seg.refs().total_size));
      exit_code = kOk;
    });
  }
  {
    auto* cmd = app.add_subcommand("info", "Show a segment's layout, producers, groups, positions and lag");
    auto arg = std::make_shared<SegmentArg>();
    arg->add_to(cmd);
    auto json = std::make_shared<bool>(false);
    cmd->add_flag("--json", *json, "One JSON object instead of text");
    cmd->callback([=, &exit_code] {
      print_info(arg->look(true), *json);
      exit_code = kOk;
    });
  }
  {
    auto* cmd = app.add_subcommand("rm", "Remove a segment (processes that have it mapped keep it until they exit)");
    auto arg = std::make_shared<SegmentArg>();
    arg->add_to(cmd, false);
    cmd->callback([=, &exit_code] {
      const Location loc = arg->location();
      if (!Segment::remove(loc)) {
        print_err("ringbus: segment {} does not exist\n", loc.display());
        exit_code = kNotFound;
        return;
      }
      fmt::print("removed {}\n", loc.display());
      exit_code = kOk;
    });
  }
}

}  // namespace ringbus::tool
