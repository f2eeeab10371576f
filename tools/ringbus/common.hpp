// Shared pieces of the `ringbus` subcommands.
#pragma once

#include <CLI/CLI.hpp>
#include <chrono>
#include <fmt/format.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <optional>
#include <span>
#include <string_view>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "ringbus/registry.hpp"
#include "ringbus/segment.hpp"
#include "ringbus/stats.hpp"

namespace ringbus::tool {

// Exit codes, documented in `ringbus --help` and README.md.
enum Exit : int {
  kOk = 0,
  kFailed = 1,    // the command failed (segment error, I/O error, ...)
  kUsage = 2,     // bad command line
  kPartial = 3,   // publish: some lines were rejected
  kNotFound = 4,  // the segment (or group, or DLQ entry) does not exist
};

// The segment a command names: NAME is a shared-memory name, or a file path if it
// contains '/'; --path FILE overrides.
struct SegmentArg {
  std::string name;
  std::string path;
  bool allow_other_owner = false;
  bool allow_wider_mode = false;
  // `opens`: the command attaches to an existing segment (not create or rm), and takes
  // --allow-other-owner and --allow-wider-mode (OpenOptions), which the refusals name.
  void add_to(CLI::App* cmd, bool opens = true);
  [[nodiscard]] Location location() const;
  // Attaches to publish.
  [[nodiscard]] Segment open() const;
  // Attaches for a short look (info, stat, tail, dlq): without reading every page first
  // (OpenOptions::touch_pages), which a 16 MiB segment pays 20 ms for on our VMs.
  // `reads_only` (info, stat, tail; not dlq, whose ring is locked to be read): a user
  // who may only read the segment (mode 0640, say) gets it read-only.
  [[nodiscard]] Segment look(bool reads_only = false) const;

 private:
  [[nodiscard]] Segment open_with(OpenOptions o) const;
};

// "64M", "16MiB", "4096", "1K", "1T" -> bytes (units are powers of 1024). Throws
// CLI::ValidationError naming `option` for text that is not a size or overflows.
std::uint64_t parse_size(const std::string& option, const std::string& text);
// A validator refusing an empty value ("is empty: <hint>"): an option given an unset
// variable (--path "$SEG", --key "$K") named nothing, and the command went on as if it
// had not been given (tail printed every event).
CLI::Validator non_empty(std::string hint);
// A validator for a number of seconds in [lo, hi]. Unlike CLI::Range it refuses NaN
// (every comparison with NaN is false) and infinities, which would make the conversion
// to nanoseconds undefined.
CLI::Validator seconds_between(double lo, double hi);
// One of `words` (e.g. "start", "end"), or a log position: up to 19 decimal digits, for
// std::stoull; else "\"V\" is not start, end or a position".
CLI::Validator word_or_position(std::vector<std::string> words);
std::string human_bytes(std::uint64_t n);
// `text` cut to at most `max` bytes, at the start of a UTF-8 character, with "..." added
// when it was cut.
std::string shortened(std::string_view text, std::size_t max);
std::string with_commas(std::uint64_t n);
// The schema registry of `seg`, or nullopt for a segment created without one.
std::optional<SchemaRegistry> registry_of(const Segment& seg);
// A whole number in decimal, from 0 to `max`. CLI11 2.1 reads a number as C does: "010"
// as octal 8 (`dlq redrive SEG GROUP 010` redrove dead letter 8), "0x10" as 16, and "-1"
// into a 64-bit unsigned option as 2^64 - 1 (`tail -n -1` printed every event); a number
// beyond the option's type it refuses as "Could not convert". This validator names what
// is wrong, and drops leading zeros so that CLI11 reads the digits as decimal.
CLI::Validator whole_number(std::uint64_t max, std::uint64_t min = 0);
inline constexpr const char* kWholeNumber = "whole-number";
// Adds an option (or positional) for a count, a size or an id: a whole number that fits
// T, and is at least `min`.
template <class T>
CLI::Option* add_number(CLI::App* cmd, std::string name, T& value, std::string help, std::uint64_t min = 0) {
  static_assert(std::is_integral_v<T> && !std::is_same_v<T, bool>);
  return cmd->add_option(std::move(name), value, std::move(help))
      ->transform(whole_number(static_cast<std::uint64_t>(std::numeric_limits<T>::max()), min));
}
// Throws std::logic_error naming an integer option of `app` or its subcommands that was
// not added by add_number (and so would read "010" as 8): run by every invocation, so
// any test of the tool finds one.
void require_whole_numbers(CLI::App& app);
// The segment as a command line names it (a shared-memory name or a file path), for
// the commands a message suggests.
std::string segment_argument(const Segment& seg);
// Workers of the group run by a live process (WorkerStats::alive).
std::uint32_t running_workers(const GroupStats& g);
// " (N% used: ...)" once a key table is 75% used, from when it may refuse a new key
// (DESIGN.md, "When the table fills"); empty below.
std::string key_table_warning(std::uint64_t keys_used, std::uint64_t key_slots);
// Standard output. Output that did not all reach it (a full disk, an I/O error) fails
// the command. `write_out` writes `text`, and `flush_out` flushes; on failure each keeps
// the cause (glibc forgets it once the failed buffer is dropped) and returns false. `finish_output`, as the tool exits, flushes,
// reports "cannot write standard output: <cause>" and turns a successful exit status
// into 1. A reader that went away (EPIPE, as in `ringbus tail | head`) is not a failure.
bool write_out(std::string_view text);
bool flush_out();
void note_output_error(int err) noexcept;
int finish_output(int exit_code);
// Whether a segment a command keeps using (tail -f, stat --watch, publish) still has its
// name, looked at (Segment::naming) at most once a second: `look()` is this_segment
// between looks.
class NameWatch {
 public:
  explicit NameWatch(const Segment& seg) : seg_(seg), looked_at_(std::chrono::steady_clock::now()) {}
  Segment::Naming look();
  [[nodiscard]] const Segment& segment() const noexcept { return seg_; }

 private:
  const Segment& seg_;
  std::chrono::steady_clock::time_point looked_at_;
};
// For a command that follows a segment (tail -f, stat --watch): -1 while `names` finds
// its name still naming it; otherwise, after saying on standard error that it was
// removed (the status to end with: 0, no event can come again) or replaced by another
// segment of that name (1: run the command again to follow the new one), the status to
// end with.
int end_if_unnamed(NameWatch& names, std::string_view command);
// "0,1" -> {0, 1}
std::vector<int> parse_cpus(const std::string& text);


// Writes to standard error, which may be closed or full (`2>&-`, a daemon's closed
// descriptor): fmt::print would throw there, and the tool ended by abort (status 134)
// at its first message, publish at its first bad line with the lines after it unread.
// A message that cannot be written is lost; the command goes on, and ends with its own
// status.
template <typename... Args>
void print_err(fmt::format_string<Args...> format, Args&&... args) {
  const std::string text = fmt::format(format, std::forward<Args>(args)...);
  static_cast<void>(std::fwrite(text.data(), 1, text.size(), stderr));
}

// Registration of each group of subcommands; each sets `exit_code` when it runs.
void add_segment_commands(CLI::App& app, int& exit_code);
void add_demo_command(CLI::App& app, int& exit_code);
void add_bench_command(CLI::App& app, int& exit_code);
void add_group_commands(CLI::App& app, int& exit_code);  // dlq and group
void add_event_commands(CLI::App& app, int& exit_code);
void add_stat_command(CLI::App& app, int& exit_code);

// After a command line was refused: how `dlq` or `group` is written, when its segment
// argument was one of its subcommands (`ringbus dlq list SEG GROUP`); empty otherwise.
std::string group_order_hint(const CLI::App& app);

}  // namespace ringbus::tool
