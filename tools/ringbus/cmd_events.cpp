// ringbus publish NAME [FILE|-]   JSON lines in, one event each
// ringbus tail NAME [...]         events out as JSON lines
#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <system_error>
#include <thread>
#include <unordered_map>

#include "common.hpp"
#include "ringbus/envelope.hpp"
#include "ringbus/error.hpp"
#include "ringbus/hash.hpp"
#include "ringbus/json.hpp"
#include "ringbus/producer.hpp"
#include "ringbus/registry.hpp"
#include "ringbus/tail_reader.hpp"

namespace ringbus::tool {
namespace {

// Set by Ctrl-C and SIGTERM. Also publish's ProducerOptions::stop: it ends a wait for room
// in a full log at once, however long --timeout.
std::atomic<bool> g_interrupted{false};
// Ctrl-C and SIGTERM set g_interrupted and write a byte here, which a wait for input
// polls beside the input: a signal that lands after a check of the flag and before the
// wait begins still ends the wait (checked, then read(2), it was lost until the input
// moved, and a second Ctrl-C was needed).
int g_wake[2] = {-1, -1};
void on_signal(int) {
  const int saved = errno;
  g_interrupted.store(true);
  if (g_wake[1] >= 0) {
    const ssize_t n = ::write(g_wake[1], "", 1);  // fails only when full: a byte is there
    static_cast<void>(n);
  }
  errno = saved;
}

void stop_on_signals() {
  if (g_wake[0] < 0 && ::pipe2(g_wake, O_NONBLOCK | O_CLOEXEC) != 0) {
    throw std::system_error(errno, std::generic_category(), "cannot create the pipe that Ctrl-C wakes");
  }
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
}

// Waits until `fd` has input (or its end, or an error, which read(2) then returns);
// false on Ctrl-C.
bool wait_for_input(int fd) {
  std::array<pollfd, 2> fds{{{fd, POLLIN, 0}, {g_wake[0], POLLIN, 0}}};
  for (;;) {
    if (g_interrupted) return false;
    const int n = ::poll(fds.data(), g_wake[0] >= 0 ? 2 : 1, -1);
    if (n > 0 || errno != EINTR) return !g_interrupted;
  }
}

// Reads lines from a file descriptor, counting bytes so that every line has its offset
// in the input. Lines may end in CRLF; a UTF-8 byte-order mark that starts the input (as
// some editors write) is skipped, as RFC 8259 allows, and counted in offsets. A line
// longer than `max_line` is read through but not kept (`length` says how long it was):
// a file with no newlines, or /dev/zero, costs a chunk of memory, not all of it.
//
// read(2) itself, not a stream: a read that a signal interrupts returns (libstdc++'s
// file buffer retries it, so Ctrl-C went unseen while a pipe's writer was idle), and a
// read that fails keeps its errno (a stream only sets a flag, or reports an end).
class LineReader {
 public:
  LineReader(int fd, std::uint64_t max_line) : fd_(fd), regular_(is_regular(fd)), max_line_(max_line) {}
  // The next line (valid until the next call), its offset and its length without the
  // newline; false at the end of the input, on Ctrl-C, or on a read error (`error()`).
  // A line longer than max_line comes back empty, with its length.
  bool next(std::string_view& line, std::uint64_t& offset, std::uint64_t& length) {
    offset = offset_;
    length = 0;
    long_.clear();
    bool spilled = false;  // part of the line went to long_ (it fills more than a chunk)
    std::size_t scanned = begin_;
    for (;;) {
      const auto* nl = static_cast<const char*>(std::memchr(chunk_.data() + scanned, '\n', end_ - scanned));
      if (nl != nullptr || (eof_ && (end_ > begin_ || spilled))) {
        const std::size_t stop = nl != nullptr ? static_cast<std::size_t>(nl - chunk_.data()) : end_;
        const std::string_view piece(chunk_.data() + begin_, stop - begin_);
        length += piece.size();
        begin_ = nl != nullptr ? stop + 1 : stop;
        offset_ += length + (nl != nullptr ? 1 : 0);
        if (!spilled) {
          line = piece;  // the usual line, in one chunk: no copy
        } else {
          if (length <= max_line_) long_.append(piece);
          line = long_;
        }
        break;
      }
      if (eof_ || error_ != 0) return false;
      if (begin_ == 0 && end_ == chunk_.size()) {  // the chunk filled before the line ended
        length += end_;
        if (length <= max_line_) {
          long_.append(chunk_.data(), end_);
        } else if (!long_.empty()) {
          std::string().swap(long_);  // too long: let its memory go
        }
        spilled = true;
        end_ = 0;
      } else if (begin_ != 0) {  // the line's start to the front, to read its rest after it
        std::memmove(chunk_.data(), chunk_.data() + begin_, end_ - begin_);
        end_ -= begin_;
        begin_ = 0;
      }
      scanned = end_;
      if (!fill()) return false;
    }
    if (length > max_line_) {
      line = {};
      return true;
    }
    if (offset == 0 && line.starts_with(kByteOrderMark)) {
      line.remove_prefix(kByteOrderMark.size());
      offset = kByteOrderMark.size();
    }
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    return true;
  }
  [[nodiscard]] std::uint64_t offset() const noexcept { return offset_; }
  // The errno of the read that failed; 0 if none did.
  [[nodiscard]] int error() const noexcept { return error_; }
  // Reads of the input so far (each up to a chunk; a wait for input ends in one).
  [[nodiscard]] std::uint64_t reads() const noexcept { return reads_; }

  static constexpr std::string_view kByteOrderMark = "\xEF\xBB\xBF";

 private:
  // Reads after end_; false on Ctrl-C or a read error. Ctrl-C is checked before every
  // read, so a line without end (/dev/zero) does not hold it off; input that may keep
  // a read waiting (a pipe, a terminal: not a regular file) is waited for in poll(2),
  // beside the pipe Ctrl-C wakes.
  bool fill() {
    for (;;) {
      if (g_interrupted) return false;
      if (!regular_ && !wait_for_input(fd_)) return false;
      const ssize_t n = ::read(fd_, chunk_.data() + end_, chunk_.size() - end_);
      ++reads_;
      if (n > 0) {
        end_ += static_cast<std::size_t>(n);
        return true;
      }
      if (n == 0) {
        eof_ = true;
        return true;
      }
      // EAGAIN: input left non-blocking by whoever passed it; wait for it again.
      if (errno != EINTR && !(errno == EAGAIN && !regular_)) {
        error_ = errno;
        return false;
      }
    }
  }

  static bool is_regular(int fd) {
    struct stat st {};
    return ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
  }

  int fd_;
  bool regular_;  // a regular file: a read never waits
  std::uint64_t max_line_;
  std::uint64_t offset_ = 0;  // input bytes before the next line
  std::uint64_t reads_ = 0;
  std::array<char, 64 * 1024> chunk_{};
  std::size_t begin_ = 0, end_ = 0;  // chunk_[begin_, end_): read, not yet returned
  bool eof_ = false;
  int error_ = 0;
  std::string long_;  // a line of more than one chunk
};

bool blank(std::string_view s) {
  return s.find_first_not_of(" \t\r") == std::string_view::npos;
}

// What `publish --help` says a line holds (json.hpp has the rules; kEnvelopeFields the
// names, each of which this names).
constexpr std::string_view kEnvelopeLineHelp =
    "Each line is one JSON object, an event envelope:\n"
    "  event_type      string of 1-95 bytes (required); its type id comes from the segment's registry\n"
    "  data            any JSON value (required), kept as written\n"
    "  key             string, not empty: events of one key are sequenced and go to one worker\n"
    "  version         integer 1-65535 (default 1)\n"
    "  timestamp       ISO-8601 date-time with a time zone, like 2026-11-22T10:00:00.123Z; 1970 to 2554 (default: now)\n"
    "  event_id, source, correlation_id, causation_id   strings\n"
    "Any other field, or one given twice, rejects the line. For example:\n"
    "  {\"event_type\":\"OrderPlaced\",\"key\":\"order-42\",\"data\":{\"qty\":100}}";

// --timeout's bound: a day, far below what nanoseconds in an int64 hold (292 years).
constexpr double kMaxTimeoutSeconds = 86400.0;

}  // namespace

void add_event_commands(CLI::App& app, int& exit_code) {
  {
    auto* cmd = app.add_subcommand(
        "publish",
        "Publish JSON lines (one event envelope per line) from FILE or standard input; bad lines are reported and "
        "skipped");
    auto arg = std::make_shared<SegmentArg>();
    arg->add_to(cmd);
    auto file = std::make_shared<std::string>("-");
    auto timeout = std::make_shared<double>(10.0);
    auto max_errors = std::make_shared<std::size_t>(20);
    auto no_progress = std::make_shared<bool>(false);
    auto exclusive = std::make_shared<bool>(false);
    cmd->add_option("file", *file, "JSON lines file, or - for standard input (default)")
        ->check(non_empty("give a file, or - for standard input"));
    cmd->add_option("--timeout", *timeout, "Seconds to wait for room while the log is full (default 10, at most a day)")
        ->check(seconds_between(0.0, kMaxTimeoutSeconds));
    add_number(cmd, "--max-errors", *max_errors, "Bad lines reported in full (default 20; all are counted)");
    cmd->add_flag("--no-progress", *no_progress, "No progress bar on a terminal");
    cmd->add_flag("--exclusive", *exclusive,
                  "Attach as the segment's only producer (refused while another is attached; refuses others)");
    cmd->footer(std::string(kEnvelopeLineHelp) + "\n\n" + cmd->get_footer());
    cmd->callback([=, &exit_code] {
      // Before the producer attaches: from then on (`ringbus info` shows it attached)
      // Ctrl-C ends the run as interrupted, whatever the run is waiting for.
      stop_on_signals();
      const Segment seg = arg->open();
      SchemaRegistry registry(seg);
      Producer producer = Producer::attach(seg, {.exclusive = *exclusive, .stop = &g_interrupted});
      int fd = STDIN_FILENO;
      std::uint64_t input_size = 0;
      if (*file != "-") {
        struct stat st {};
        if (::stat(file->c_str(), &st) != 0) throw std::runtime_error("cannot read " + *file + ": " + std::strerror(errno));
        if (S_ISDIR(st.st_mode)) throw std::runtime_error("cannot read " + *file + ": it is a directory");
        // Opened without waiting: a named pipe's open would wait for a writer, with Ctrl-C
        // unseen; LineReader's first read waits instead, and Ctrl-C ends that wait.
        fd = ::open(file->c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
        if (fd < 0) throw std::runtime_error("cannot read " + *file + ": " + std::strerror(errno));
        ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
        input_size = S_ISREG(st.st_mode) ? static_cast<std::uint64_t>(st.st_size) : 0;
      }
      const struct Closer {
        int fd;
        ~Closer() {
          if (fd > STDIN_FILENO) ::close(fd);
        }
      } closer{fd};
      const std::string input_name = *file == "-" ? "standard input" : *file;
      const bool progress = !*no_progress && ::isatty(STDERR_FILENO) != 0 && (input_size == 0 || input_size > (1u << 20));
      // Room for data written as a six-byte escape (\u0001) for every byte, and for the
      // envelope's other strings (65,535 bytes each at most).
      const std::uint64_t max_line = 8 * std::uint64_t{seg.max_event()} + (4u << 20);
      LineReader reader(fd, max_line);
      std::string_view line;
      std::uint64_t offset = 0, length = 0, line_no = 0, published = 0, rejected = 0;
      const auto start = std::chrono::steady_clock::now();
      auto last_draw = start;
      Envelope envelope;
      auto reject = [&](const std::string& what) {
        if (++rejected <= *max_errors) {
          print_err("{}{}: line {}: {}\n", progress ? "\r\33[K" : "", input_name, line_no, what);
        }
      };
      std::uint64_t reads_seen = 0;
      NameWatch names(seg);
      while (!g_interrupted && reader.next(line, offset, length)) {
        ++line_no;
        // Removed or replaced meanwhile, the segment takes lines no reader will see.
        // Looked at after the input was read (a chunk, or after a wait).
        if (reader.reads() != reads_seen) {
          reads_seen = reader.reads();
          if (const Segment::Naming n = names.look(); n != Segment::Naming::this_segment) {
            print_err("{}ringbus publish: segment {} was {}: line {} and the lines after it are not published\n",
                      progress ? "\r\33[K" : "", seg.location().display(),
                      n == Segment::Naming::nothing ? "removed" : "replaced by another of that name", line_no);
            --line_no;
            exit_code = kFailed;
            break;
          }
        }
        if (length > max_line) {
          reject(fmt::format("byte {}: the line is {} bytes, longer than any line carrying an event segment {} "
                             "takes ({} bytes: 8 x max_event {} + 4 MiB); skipped",
                             offset, with_commas(length), seg.location().display(), with_commas(max_line),
                             with_commas(seg.max_event())));
          continue;
        }
        if (blank(line)) continue;
        if (line.starts_with(LineReader::kByteOrderMark)) {  // e.g. files concatenated with cat
          reject(fmt::format("byte {} (column 1): a UTF-8 byte-order mark starts the line (one is skipped only at the "
                             "start of the input)",
                             offset));
          continue;
        }
        if (auto err = parse_envelope_json(line, envelope)) {
          reject(fmt::format("byte {} (column {}): {}{}", offset + err->offset, err->offset + 1,
                             err->field.empty() ? "" : "field \"" + err->field + "\" ", err->message));
          continue;
        }
        const Status s = publish_envelope(producer, registry, envelope,
                                          std::chrono::nanoseconds(static_cast<std::int64_t>(*timeout * 1e9)));
        if (s == Status::stopped) {  // Ctrl-C while the log was full
          print_err("{}ringbus publish: interrupted while segment {} was full (a consumer group is not keeping up; see "
                    "`ringbus info`): line {} and the lines after it are not published\n",
                    progress ? "\r\33[K" : "", seg.location().display(), line_no);
          --line_no;
          break;
        }
        if (s == Status::ok) {
          ++published;
        } else if (s == Status::too_large || s == Status::invalid) {
          reject(fmt::format("byte {}: the event is {} bytes; segment {} takes events of at most {} bytes",
                             offset, envelope_payload_size(envelope), seg.location().display(), seg.max_event()));
        } else if (s == Status::keys_full) {
          reject(fmt::format("byte {}: segment {} has no room for another key (its key table is full)", offset,
                             seg.location().display()));
        } else if (s == Status::types_full) {
          reject(fmt::format("byte {}: segment {} has no room for event type \"{}\" (its schema registry is full: "
                             "{} event types)",
                             offset, seg.location().display(), printable(envelope.event_type),
                             seg.refs().registry_slots));
        } else {
          print_err("{}ringbus publish: segment {}: line {}: {} (the log stayed full for {} s: a consumer "
                    "group is not keeping up; see `ringbus info`): it and the lines after it are not published\n",
                    progress ? "\r\33[K" : "", seg.location().display(), line_no, to_string(s), *timeout);
          exit_code = kFailed;
          break;
        }
        if (progress && (line_no & 0x3ff) == 0) {
          const auto now = std::chrono::steady_clock::now();
          if (now - last_draw > std::chrono::milliseconds(100)) {
            last_draw = now;
            const double secs = std::chrono::duration<double>(now - start).count();
            const double pct = input_size ? 100.0 * static_cast<double>(reader.offset()) / static_cast<double>(input_size) : 0;
            const int filled = static_cast<int>(pct / 100 * 30);
            print_err("\r[{}{}] {:5.1f}%  {} lines  {:.0f} lines/s", std::string(static_cast<std::size_t>(filled), '#'),
                      std::string(static_cast<std::size_t>(30 - filled), ' '), pct, with_commas(line_no),
                      static_cast<double>(line_no) / secs);
          }
        }
      }
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (progress) print_err("\r\33[K");
      if (rejected > *max_errors) print_err("... and {} more bad lines\n", rejected - *max_errors);
      if (reader.error() != 0) {
        print_err("ringbus publish: cannot read {} after byte {} (line {}): {}\n", input_name,
                  with_commas(reader.offset()), with_commas(line_no + 1), std::strerror(reader.error()));
        exit_code = kFailed;
      }
      print_err("published {} of {} lines into {} ({} rejected) in {:.2f} s ({:.0f} events/s){}\n",
                with_commas(published), with_commas(published + rejected), seg.location().display(),
                with_commas(rejected), secs, static_cast<double>(published) / std::max(secs, 1e-9),
                g_interrupted ? "; interrupted" : "");
      if (exit_code != kFailed) exit_code = rejected == 0 && !g_interrupted ? kOk : kPartial;
    });
  }
  {
    auto* cmd = app.add_subcommand("tail", "Print events as JSON lines (the envelope, plus position and key_seq)");
    auto arg = std::make_shared<SegmentArg>();
    arg->add_to(cmd);
    auto from = std::make_shared<std::string>("start");
    auto follow = std::make_shared<bool>(false);
    auto count = std::make_shared<std::uint64_t>(0);
    auto key = std::make_shared<std::string>();
    auto type = std::make_shared<std::string>();
    cmd->add_option("--from", *from, "start (oldest event still in the ring), end, or a position (default start)")
        ->check(word_or_position({"start", "end"}));
    cmd->add_flag("--follow,-f", *follow, "Keep printing new events until interrupted");
    add_number(cmd, "--count,-n", *count, "Stop after this many events (0, the default: no limit)");
    cmd->add_option("--key", *key, "Only events of this key")->check(non_empty("events have a key of 1 byte or more"));
    cmd->add_option("--type", *type, "Only events of this event type")
        ->check(non_empty("event types are 1 to 95 bytes"));
    cmd->callback([=, &exit_code] {
      const Segment seg = arg->look(true);
      const std::optional<SchemaRegistry> registry = registry_of(seg);
      std::optional<std::uint16_t> type_id;
      if (!type->empty()) {
        type_id = registry ? registry->find(*type) : std::nullopt;
        if (!type_id && !(*follow && registry)) {
          print_err("ringbus tail: segment {} has no event type \"{}\"{}\n", seg.location().display(), *type,
                    registry ? "" : " (it has no schema registry)");
          exit_code = kNotFound;
          return;
        }
        // Following, a type not registered yet is waited for: the first event whose type
        // id names it in the registry (registered since) fixes the id.
        if (!type_id) {
          print_err("ringbus tail: segment {} has no event type \"{}\" yet; following until one is published\n",
                    seg.location().display(), *type);
        }
      }
      TailReader reader = [&] {
        if (*from == "start") return TailReader::open(seg, TailStart::earliest);
        if (*from == "end") return TailReader::open(seg, TailStart::end);
        return TailReader::open_at(seg, std::stoull(*from));
      }();
      const std::uint64_t key_filter = key->empty() ? 0 : key_of(*key);
      stop_on_signals();
      std::uint64_t printed = 0;
      Event e;
      std::string out;
      std::uint64_t told_held_at = layout::kNoPosition;  // said once a claim
      NameWatch names(seg);
      exit_code = kOk;
      while (!g_interrupted && (*count == 0 || printed < *count)) {
        if (!reader.try_next(e)) {
          // A record claimed but not committed: the reader repairs it after 0.1 s if its
          // producer died. Held for a second, it is a live producer stopped mid-publish,
          // or (read-only) one this user cannot repair: said once; without --follow, the
          // output stops there, short, and the command fails.
          const std::optional<std::chrono::nanoseconds> held = reader.held_at_claim();
          if (held && *held >= std::chrono::seconds(1) && told_held_at != reader.position()) {
            told_held_at = reader.position();
            print_err("ringbus tail: {} at position {}: the record claimed there is not committed after {:.1f} s; {}\n",
                      *follow ? "waiting" : "stopped", reader.position(), std::chrono::duration<double>(*held).count(),
                      seg.read_only() ? "this process may only read the segment (this user's permission, or "
                                        "another pid namespace), so cannot repair the claim if its producer died (a "
                                        "process that may write the segment repairs it)"
                                      : "its producer is alive (stopped mid-publish?)");
            if (!*follow) {
              exit_code = kFailed;
              break;
            }
          }
          if ((!*follow && !held) || !flush_out()) break;
          if (const int end = *follow ? end_if_unnamed(names, "tail") : -1; end >= 0) {
            exit_code = end;
            break;
          }
          std::this_thread::sleep_for(std::chrono::milliseconds(2));
          continue;
        }
        if (key_filter != 0 && e.key() != key_filter) continue;
        if (!type->empty() && !type_id) {
          const std::optional<TypeInfo> t = registry->info(e.type());
          if (!t || t->name != *type) continue;
          type_id = e.type();
        }
        if (type_id && e.type() != *type_id) continue;
        out = event_json(e, registry ? &*registry : nullptr);
        out += '\n';
        if (!write_out(out)) break;  // the reader went away, or the disk is full (finish_output tells)
        ++printed;
      }
      flush_out();
      // Missed events are counted from gaps in producer_seq, so only between events read;
      // bytes skipped before the first event read have no count of events.
      if (reader.missed() != 0) {
        print_err("ringbus tail: the ring overtook this reader: {} events missed ({} bytes skipped)\n",
                  with_commas(reader.missed()), with_commas(reader.missed_bytes()));
      } else if (reader.missed_bytes() != 0) {
        print_err("ringbus tail: the ring overtook this reader: {} bytes skipped\n",
                  with_commas(reader.missed_bytes()));
      }
    });
  }
}

}  // namespace ringbus::tool
