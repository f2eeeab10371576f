// ringbus dlq NAME GROUP list | show ID | redrive [ID | --all] [--republish] | purge
//   (list, redrive and purge take [--key KEY] [--type TYPE])
// ringbus group NAME GROUP rm [--discard-dead-letters] | skip --to end|POSITION
#include <fmt/format.h>

#include <cstring>
#include <ctime>
#include <optional>
#include <vector>

#include "common.hpp"
#include "ringbus/consumer.hpp"
#include "ringbus/dlq.hpp"
#include "ringbus/hash.hpp"
#include "ringbus/error.hpp"
#include "ringbus/json.hpp"
#include "ringbus/producer.hpp"
#include "ringbus/registry.hpp"
#include "ringbus/stats.hpp"

namespace ringbus::tool {
namespace {

std::string when(std::uint64_t ns) {
  if (ns == 0) return "-";
  const auto t = static_cast<std::time_t>(ns / 1'000'000'000ull);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  return fmt::format("{}.{:03}Z", buf, (ns / 1'000'000) % 1000);
}

// A dead letter published as an envelope, as `ringbus tail` prints it (its event type
// by name, its key and data as written); empty for any other payload.
std::string envelope_text(const DeadLetter& d, const std::optional<SchemaRegistry>& registry) {
  if ((flags_of(d.header.key_seq_flags) & record_flags::envelope) == 0) return {};
  static_assert(sizeof(RecordHeader) == kRecordHeaderSize);
  std::vector<std::uint64_t> record((kRecordHeaderSize + d.payload.size() + 7) / 8);  // header, then payload
  std::memcpy(record.data(), &d.header, sizeof d.header);
  std::memcpy(reinterpret_cast<std::byte*>(record.data()) + kRecordHeaderSize, d.payload.data(), d.payload.size());
  const Event e(reinterpret_cast<const RecordHeader*>(record.data()), d.position,
                static_cast<std::uint32_t>(d.payload.size()));
  return event_json(e, registry ? &*registry : nullptr);
}

// The event type's name when the registry has it, else its id.
std::string type_text(std::uint16_t type_id, const std::optional<SchemaRegistry>& registry) {
  const std::optional<TypeInfo> t = registry ? registry->info(type_id) : std::nullopt;
  return t ? printable(t->name) : std::to_string(type_id);
}

void print_letter(const DeadLetter& d, const std::optional<SchemaRegistry>& registry) {
  const std::string envelope = envelope_text(d, registry);
  fmt::print("{{\"id\": {}, \"state\": \"{}\", \"attempts\": {}, \"worker\": {}, \"position\": {}, "
             "\"first_failure\": \"{}\", \"last_failure\": \"{}\", \"next_attempt\": {}, \"error\": {},\n"
             " \"event\": {{\"key\": {}, \"key_seq\": {}, \"type\": {}, \"schema_version\": {}, \"producer_id\": {}, "
             "\"producer_seq\": {}, \"correlation_id\": {}, \"timestamp_ns\": {}, \"flags\": {}}},\n"
             " \"payload_bytes\": {}, \"payload\": {}{}}}\n",
             d.id, d.state, d.attempts, d.worker, d.position, when(d.first_failure_ns), when(d.last_failure_ns),
             d.next_attempt_ns == 0 ? std::string("null") : "\"" + when(d.next_attempt_ns) + "\"", json_string(d.message), d.header.key, key_seq_of(d.header.key_seq_flags), d.header.type_id,
             d.header.schema_version, d.header.producer_id, d.header.producer_seq, d.header.correlation_id,
             d.header.timestamp_ns, flags_of(d.header.key_seq_flags), d.payload.size(), payload_json(d.payload),
             envelope.empty() ? "" : ",\n \"envelope\": " + envelope);
}

// --key and --type of `dlq list`, `redrive` and `purge`: the dead letters of one key (its
// text, as `tail --key` takes it) or one event type, or both.
struct LetterFilter {
  std::string key;
  std::string type;
  std::optional<std::uint16_t> type_id;

  void add_to(CLI::App* cmd) {
    cmd->add_option("--key", key, "Only dead letters of this key")
        ->check(non_empty("events have a key of 1 byte or more"));
    cmd->add_option("--type", type, "Only dead letters of this event type")
        ->check(non_empty("event types are 1 to 95 bytes"));
  }
  [[nodiscard]] bool any() const { return !key.empty() || !type.empty(); }
  // Looks the type up in the segment's registry: false, having said so, if it has none
  // of that name (exit code kNotFound).
  bool resolve(const Segment& seg, const std::optional<SchemaRegistry>& registry, int& exit_code) {
    if (type.empty()) return true;
    type_id = registry ? registry->find(type) : std::nullopt;
    if (type_id) return true;
    print_err("ringbus dlq: segment {} has no event type \"{}\"{}\n", seg.location().display(), printable(type),
              registry ? "" : " (it has no schema registry)");
    exit_code = kNotFound;
    return false;
  }
  [[nodiscard]] bool matches(const DeadLetter& d) const {
    return (key.empty() || d.header.key == key_of(key)) && (!type_id || d.header.type_id == *type_id);
  }
  // "of key \"a1\" and type \"order.placed\"".
  [[nodiscard]] std::string describe() const {
    std::string out = "of ";
    if (!key.empty()) out += "key " + json_string(key);
    if (!key.empty() && !type.empty()) out += " and ";
    if (!type.empty()) out += "type " + json_string(type);
    return out;
  }
};

// The ids of the dead letters `filter` matches, oldest first.
std::vector<std::uint64_t> ids_matching(const DeadLetters& dlq, const LetterFilter& filter) {
  std::vector<std::uint64_t> ids;
  for (const DeadLetter& d : dlq.list()) {
    if (filter.matches(d)) ids.push_back(d.id);
  }
  return ids;
}

// `ringbus COMMAND NAME GROUP SUBCOMMAND`: the command, with the segment and group it takes.
struct GroupCommand {
  CLI::App* cmd;
  std::shared_ptr<SegmentArg> arg;
  std::shared_ptr<std::string> group;
};

GroupCommand add_group_command(CLI::App& app, const std::string& name, const std::string& description) {
  GroupCommand c{app.add_subcommand(name, description), std::make_shared<SegmentArg>(), std::make_shared<std::string>()};
  c.arg->add_to(c.cmd);
  c.cmd->add_option("group", *c.group, "Consumer group")->required();
  c.cmd->require_subcommand(1);
  // --path, --allow-other-owner and --allow-wider-mode are the command's: after the
  // subcommand (`dlq NAME GROUP list --allow-other-owner`) they fall through to it.
  c.cmd->fallthrough();
  return c;
}

void say_no_group(const Segment& seg, const std::string& group, int& exit_code) {
  print_err("ringbus group: segment {} has no group \"{}\"\n", seg.location().display(), printable(group));
  exit_code = kNotFound;
}

void say_marked(std::size_t n, const std::string& which, const std::string& group) {
  fmt::print("{} dead letter{}{} marked for redelivery to group \"{}\": the worker each key routes to hands it to "
             "the handler again, under the group's retry policy, and it is removed once accepted\n",
             n, n == 1 ? "" : "s", which, group);
}

// `dlq redrive --key/--type`: each matching dead letter that is parked (`ready`) is marked
// for redelivery, or republished; the others are on their way back already.
void redrive_matching(const Segment& seg, DeadLetters& dlq, const LetterFilter& filter, bool republish,
                      int& exit_code) {
  const std::string which = " " + filter.describe();
  std::vector<std::uint64_t> ids;
  for (const DeadLetter& d : dlq.list()) {
    if (filter.matches(d) && d.state == "ready") ids.push_back(d.id);
  }
  exit_code = kOk;
  if (!republish) {
    std::size_t n = 0;
    for (const std::uint64_t id : ids) n += dlq.request_redrive(id);
    say_marked(n, which, dlq.group());
    return;
  }
  Producer p = Producer::attach(seg);
  Status last = Status::ok;
  std::size_t n = 0;
  for (const std::uint64_t id : ids) {
    n += dlq.republish(p, id, &last);
    if (last != Status::ok) break;
  }
  fmt::print("republished {} dead letter{}{} into {}\n", n, n == 1 ? "" : "s", which, seg.location().display());
  if (last != Status::ok) {
    print_err("ringbus: stopped: the log refused the next one ({})\n", to_string(last));
    exit_code = kFailed;
  }
}

void add_dlq_command(CLI::App& app, int& exit_code) {
  const auto [cmd, arg, group] = add_group_command(app, "dlq", "List, show, redrive or purge a consumer group's dead letters");

  auto* list = cmd->add_subcommand("list", "One line per dead letter (or per one of --key or --type)");
  auto list_filter = std::make_shared<LetterFilter>();
  list_filter->add_to(list);
  list->callback([arg, group, list_filter, &exit_code] {
    const Segment seg = arg->look();
    const std::optional<SchemaRegistry> registry = registry_of(seg);
    DeadLetters dlq = DeadLetters::open(seg, *group);
    if (!list_filter->resolve(seg, registry, exit_code)) return;
    std::vector<DeadLetter> letters = dlq.list();
    const DeadLetterStats s = dlq.stats();
    fmt::print("dead letters of group \"{}\": {} (ring {} of {} used, {} appended, {} removed, full {} times)\n",
               dlq.group(), letters.size(), human_bytes(s.bytes_used), human_bytes(s.capacity), s.appended,
               s.removed, s.full_waits);
    if (list_filter->any()) {
      std::erase_if(letters, [&](const DeadLetter& d) { return !list_filter->matches(d); });
      fmt::print("{} of them {}\n", letters.size(), list_filter->describe());
    }
    if (!letters.empty()) {
      fmt::print("{:>6}  {:<10}  {:>8}  {:>20}  {:>8}  {:>6}  {:<24}  {:<24}  {}\n", "id", "state", "attempts", "key",
                 "key_seq", "type", "last failure", "next attempt", "error");
    }
    for (const DeadLetter& d : letters) {
      fmt::print("{:>6}  {:<10}  {:>8}  {:>20}  {:>8}  {:>6}  {:<24}  {:<24}  {}\n", d.id, d.state, d.attempts,
                 d.header.key, key_seq_of(d.header.key_seq_flags), type_text(d.header.type_id, registry),
                 when(d.last_failure_ns), when(d.next_attempt_ns), shortened(printable(d.message), 80));
    }
    exit_code = kOk;
  });

  auto* show = cmd->add_subcommand("show", "One dead letter in full, as JSON");
  auto id = std::make_shared<std::uint64_t>(0);
  add_number(show, "id", *id, "Dead letter id")->required();
  show->callback([arg, id, group, &exit_code] {
    const Segment seg = arg->look();
    const auto d = DeadLetters::open(seg, *group).get(*id);
    if (!d) {
      print_err("ringbus: group \"{}\" has no dead letter {}\n", *group, *id);
      exit_code = kNotFound;
      return;
    }
    print_letter(*d, registry_of(seg));
    exit_code = kOk;
  });

  auto* redrive = cmd->add_subcommand(
      "redrive",
      "Deliver dead letters again: to the group's own workers (removed once the handler accepts them), or with "
      "--republish into the log for every group");
  auto rid = std::make_shared<std::uint64_t>(0);
  auto all = std::make_shared<bool>(false);
  auto republish = std::make_shared<bool>(false);
  add_number(redrive, "id", *rid, "Dead letter id");
  redrive->add_flag("--all", *all, "Every dead letter");
  redrive->add_flag("--republish", *republish, "Publish them into the log again (flag redriven) instead");
  auto redrive_filter = std::make_shared<LetterFilter>();
  redrive_filter->add_to(redrive);
  redrive->callback([arg, group, rid, all, republish, redrive_filter, &exit_code] {
    const LetterFilter& filter = *redrive_filter;
    if ((*rid != 0) == (*all || filter.any())) {
      throw CLI::ValidationError("redrive", "give one dead letter id, or --all, --key or --type");
    }
    const Segment seg = arg->look();
    DeadLetters dlq = DeadLetters::open(seg, *group);
    if (filter.any()) {
      if (!redrive_filter->resolve(seg, registry_of(seg), exit_code)) return;
      redrive_matching(seg, dlq, filter, *republish, exit_code);
      return;
    }
    const std::optional<std::uint64_t> which = *all ? std::nullopt : std::optional<std::uint64_t>(*rid);
    const std::optional<DeadLetter> one = which ? dlq.get(*which) : std::nullopt;
    if (which && !one) {
      print_err("ringbus: group \"{}\" has no dead letter {}\n", *group, *which);
      exit_code = kNotFound;
      return;
    }
    // One that is not parked any more is on its way back already: marking it again does
    // nothing, and republishing it as well would deliver it twice.
    if (one && one->state != "ready") {
      const std::string why =
          one->state == "redrive"   ? "is marked for redelivery to the group's workers already"
          : one->next_attempt_ns != 0 ? "is being delivered to the group's workers (its next call at " +
                                            when(one->next_attempt_ns) + ", by the retry policy)"
                                      : "is being delivered to the group's workers";
      if (*republish) {
        print_err("ringbus: dead letter {} of group \"{}\" {}: not republished\n", *which, *group, why);
        exit_code = kFailed;
        return;
      }
      fmt::print("dead letter {} of group \"{}\" {}\n", *which, *group, why);
      exit_code = kOk;
      return;
    }
    if (*republish) {
      Producer p = Producer::attach(seg);
      Status last = Status::ok;
      const std::size_t n = dlq.republish(p, which, &last);
      fmt::print("republished {} dead letter{} into {}\n", n, n == 1 ? "" : "s", seg.location().display());
      if (last != Status::ok) {
        print_err("ringbus: stopped: the log refused the next one ({})\n", to_string(last));
        exit_code = kFailed;
        return;
      }
      exit_code = kOk;
      return;
    }
    say_marked(dlq.request_redrive(which), "", *group);
    exit_code = kOk;
  });

  auto* purge = cmd->add_subcommand("purge", "Remove every dead letter, or those of --key or --type (those being redelivered stay)");
  auto purge_filter = std::make_shared<LetterFilter>();
  purge_filter->add_to(purge);
  purge->callback([arg, group, purge_filter, &exit_code] {
    const Segment seg = arg->look();
    DeadLetters dlq = DeadLetters::open(seg, *group);
    std::size_t n = 0;
    if (purge_filter->any()) {
      if (!purge_filter->resolve(seg, registry_of(seg), exit_code)) return;
      for (const std::uint64_t id : ids_matching(dlq, *purge_filter)) n += dlq.remove(id) ? 1 : 0;
    } else {
      n = dlq.purge();
    }
    fmt::print("purged {} dead letter{}{} of group \"{}\"\n", n, n == 1 ? "" : "s",
               purge_filter->any() ? " " + purge_filter->describe() : "", dlq.group());
    exit_code = kOk;
  });
}

// A group gates producers until it is removed: one whose processes are gone for good
// holds every producer back once the log is a lap ahead of its cursor.
void add_group_admin_command(CLI::App& app, int& exit_code) {
  const auto [cmd, arg, group] = add_group_command(
      app, "group", "Remove a consumer group nobody runs any more, or move its cursors forward past events it need not handle");

  auto* rm = cmd->add_subcommand(
      "rm", "Unregister the group: its cursors stop holding producers back; its dead letters, dedup windows and "
            "latency figures go with it. Refused while a live process runs or joins it");
  auto discard = std::make_shared<bool>(false);
  rm->add_flag("--discard-dead-letters", *discard, "Remove it even though its dead-letter ring holds entries");
  rm->callback([arg, group, discard, &exit_code] {
    const Segment seg = arg->open();
    const SegmentStats stats = read_stats(seg);
    const auto g = std::find_if(stats.groups.begin(), stats.groups.end(),
                                [&](const GroupStats& s) { return s.name == *group; });
    if (g == stats.groups.end()) return say_no_group(seg, *group, exit_code);
    // Said before the dead letters: stopping its process comes first. remove() checks again.
    const auto live = std::find_if(g->worker.begin(), g->worker.end(), [](const WorkerStats& w) { return w.alive; });
    if (live != g->worker.end()) {
      print_err("ringbus group: group \"{}\" of segment {} is run by live pid {} (worker {}): stop it first; not "
                "removed\n",
                printable(*group), seg.location().display(), live->pid, live->index);
      exit_code = kFailed;
      return;
    }
    if (g->dead_letters != 0 && !*discard) {
      print_err("ringbus group: group \"{0}\" of segment {1} holds {2} dead letter{3}, which would go with it: "
                "republish or purge {4} (ringbus dlq {5} {0} redrive --all --republish, or purge), or pass "
                "--discard-dead-letters; not removed\n",
                printable(*group), seg.location().display(), with_commas(g->dead_letters),
                g->dead_letters == 1 ? "" : "s", g->dead_letters == 1 ? "it" : "them", segment_argument(seg));
      exit_code = kFailed;
      return;
    }
    if (!ConsumerGroup::remove(seg, *group)) return say_no_group(seg, *group, exit_code);  // removed meanwhile
    fmt::print("removed group \"{}\" of segment {}: its cursor was at {}, {} behind the tail{}\n", printable(*group),
               seg.location().display(), with_commas(g->cursor), human_bytes(g->lag_bytes),
               g->dead_letters == 0 ? "" : fmt::format("; {} dead letter{} discarded", with_commas(g->dead_letters),
                                                       g->dead_letters == 1 ? "" : "s"));
    exit_code = kOk;
  });

  auto* skip = cmd->add_subcommand(
      "skip",
      "Move the cursors of a group nobody runs forward, so that the events before --to are not delivered to it: past "
      "an event its handler never accepts (a worker without dead letters stops there), or past a backlog");
  auto to = std::make_shared<std::string>();
  skip->add_option("--to", *to, "end (the tail), or a position where a record starts, as tail prints it")
      ->required()
      ->check(word_or_position({"end"}));
  skip->callback([arg, group, to, &exit_code] {
    const Segment seg = arg->open();
    const std::uint64_t position = *to == "end" ? layout::kNoPosition : std::stoull(*to);
    const std::optional<ConsumerGroup::Skipped> skipped = ConsumerGroup::skip_to(seg, *group, position);
    if (!skipped) return say_no_group(seg, *group, exit_code);
    fmt::print("group \"{}\" of segment {}: cursors moved forward from {} to {}{}: {} skipped\n", printable(*group),
               seg.location().display(), with_commas(skipped->from), *to == "end" ? "the tail, " : "",
               with_commas(skipped->to), human_bytes(skipped->to - skipped->from));
    exit_code = kOk;
  });
}

}  // namespace

void add_group_commands(CLI::App& app, int& exit_code) {
  add_dlq_command(app, exit_code);
  add_group_admin_command(app, exit_code);
}

std::string group_order_hint(const CLI::App& app) {
  for (const char* command : {"dlq", "group"}) {
    const CLI::App* cmd = app.get_subcommand(command);  // registered by add_group_commands
    const CLI::Option* name = cmd->get_option_no_throw("name");
    if (cmd->count() == 0 || name == nullptr || name->results().empty()) continue;
    const std::string& word = name->results().front();
    if (cmd->get_subcommands([&](const CLI::App* sub) { return sub->get_name() == word; }).empty()) continue;
    return fmt::format("ringbus {0}: the segment and the group come before the subcommand: ringbus {0} NAME GROUP {1}",
                       command, word);
  }
  return {};
}

}  // namespace ringbus::tool
