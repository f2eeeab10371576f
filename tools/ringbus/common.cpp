#include "common.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <stdexcept>

#include "ringbus/error.hpp"

namespace ringbus::tool {

void SegmentArg::add_to(CLI::App* cmd, bool opens) {
  cmd->add_option("name", name, "Segment: a shared-memory name (NAME or shm:NAME), or a file path if it contains '/'")->required();
  cmd->add_option("--path", path, "File path of a file-backed segment (overrides NAME)")
      ->check(non_empty("give a file path"));
  if (!opens) return;
  cmd->add_flag("--allow-other-owner", allow_other_owner,
                "Accept a segment another user owns (one created with a --mode that lets this user read and write it)");
  cmd->add_flag("--allow-wider-mode", allow_wider_mode,
                "Accept a segment whose permission bits were widened since its creation");
}

Location SegmentArg::location() const {
  if (!path.empty()) return Location::file(path);
  return Location::parse(name);
}

Segment SegmentArg::open_with(OpenOptions o) const {
  o.allow_other_owner = allow_other_owner;
  o.allow_wider_mode = allow_wider_mode;
  try {
    return Segment::open(location(), o);
  } catch (const Error& e) {
    // The library names its option; the tool names its flag.
    const char* flag = e.code() == Errc::owner_mismatch ? "--allow-other-owner"
                       : e.code() == Errc::mode_widened ? "--allow-wider-mode"
                                                        : nullptr;
    if (flag == nullptr) throw;
    const std::string what = e.what();
    throw Error(e.code(), what.substr(0, what.find("; pass ")) + "; pass " + flag + " to accept it");
  }
}

Segment SegmentArg::open() const { return open_with({}); }

Segment SegmentArg::look(bool reads_only) const {
  OpenOptions o;
  o.touch_pages = false;
  try {
    return open_with(o);
  } catch (const Error& e) {
    // Not permitted to write, or a process of another pid namespace: it may still read.
    if (!reads_only || (e.code() != Errc::permission && e.code() != Errc::pid_namespace)) throw;
  }
  o.read_only = true;
  return open_with(o);
}

std::uint64_t parse_size(const std::string& option, const std::string& text) {
  std::uint64_t n = 0;
  const char* const end = text.data() + text.size();
  const auto [rest, ec] = std::from_chars(text.data(), end, n);
  if (!text.empty() && text[0] == '-') throw CLI::ValidationError(option, "\"" + text + "\" is negative");
  // A unit is letters right after whole digits: "1.5M", "0x10" and "16 M" are not sizes.
  const std::string_view letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
  if (rest == text.data() || std::string_view(rest, end).find_first_not_of(letters) != std::string_view::npos) {
    throw CLI::ValidationError(option, "\"" + text + "\" is not a size: a whole number of bytes, with an optional unit "
                                       "(e.g. 4096, 64K, 16M, 1G)");
  }
  if (ec == std::errc::result_out_of_range) throw CLI::ValidationError(option, "\"" + text + "\" is too large");
  std::string unit(rest, end);
  for (char& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  unsigned shift = 0;
  if (unit == "" || unit == "B") {
    shift = 0;
  } else if (unit == "K" || unit == "KB" || unit == "KIB") {
    shift = 10;
  } else if (unit == "M" || unit == "MB" || unit == "MIB") {
    shift = 20;
  } else if (unit == "G" || unit == "GB" || unit == "GIB") {
    shift = 30;
  } else if (unit == "T" || unit == "TB" || unit == "TIB") {
    shift = 40;
  } else {
    throw CLI::ValidationError(option, "\"" + text + "\" has an unknown unit (use K, M, G or T)");
  }
  if (n > (~std::uint64_t{0} >> shift)) throw CLI::ValidationError(option, "\"" + text + "\" is too large");
  return n << shift;
}

CLI::Validator non_empty(std::string hint) {
  return CLI::Validator(
      [hint = std::move(hint)](std::string& v) { return v.empty() ? "is empty: " + hint : std::string(); }, "");
}

CLI::Validator seconds_between(double lo, double hi) {
  return CLI::Validator(
      [lo, hi](std::string& input) -> std::string {
        double v = 0;
        if (!CLI::detail::lexical_cast(input, v) || !std::isfinite(v) || !(v >= lo && v <= hi)) {
          return fmt::format("\"{}\" is not a number of seconds from {} to {}", input, lo, hi);
        }
        return {};
      },
      fmt::format("SECONDS in [{} - {}]", lo, hi));
}

CLI::Validator word_or_position(std::vector<std::string> words) {
  const std::string choices = fmt::format("{}", fmt::join(words, ", ")) + " or a position";
  const std::string name = fmt::format("{}", fmt::join(words, "|")) + "|POSITION";
  return CLI::Validator(
      [words = std::move(words), choices](std::string& v) -> std::string {
        if (std::find(words.begin(), words.end(), v) != words.end()) return {};
        if (v.empty() || v.size() > 19 || v.find_first_not_of("0123456789") != std::string::npos) {
          return "\"" + v + "\" is not " + choices;
        }
        return {};
      },
      name);
}

std::string human_bytes(std::uint64_t n) {
  if (n >= (1ull << 30) && n % (1ull << 30) == 0) return fmt::format("{} GiB", n >> 30);
  if (n >= (1ull << 20) && n % (1ull << 20) == 0) return fmt::format("{} MiB", n >> 20);
  if (n >= (1ull << 10) && n % (1ull << 10) == 0) return fmt::format("{} KiB", n >> 10);
  return fmt::format("{} B", n);
}

std::string shortened(std::string_view text, std::size_t max) {
  if (text.size() <= max) return std::string(text);
  std::size_t cut = max;
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xc0) == 0x80) --cut;  // a continuation byte
  return std::string(text.substr(0, cut)) + "...";
}

std::string segment_argument(const Segment& seg) {
  const Location& at = seg.location();
  return at.kind == Location::Kind::shm ? at.name : at.display();
}

std::uint32_t running_workers(const GroupStats& g) {
  return static_cast<std::uint32_t>(std::count_if(g.worker.begin(), g.worker.end(), [](const WorkerStats& w) { return w.alive; }));
}

std::string key_table_warning(std::uint64_t keys_used, std::uint64_t key_slots) {
  if (key_slots == 0 || keys_used * 4 < key_slots * 3) return {};
  return fmt::format(" ({}% used: new keys may be refused from about 80%)", keys_used * 100 / key_slots);
}

CLI::Validator whole_number(std::uint64_t max, std::uint64_t min) {
  return CLI::Validator(
      [max, min](std::string& v) -> std::string {
        const std::size_t first = v.find_first_not_of(" \t");
        if (first != std::string::npos && v[first] == '-') {
          return min == 0 ? fmt::format("\"{}\" is negative: it must be 0 or more", v)
                          : fmt::format("\"{}\" is negative: it must be at least {}", v, min);
        }
        if (v.empty() || v.find_first_not_of("0123456789") != std::string::npos) {
          return "\"" + v + "\" is not a whole number in decimal";
        }
        std::uint64_t n = 0;
        const auto [rest, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
        if (ec == std::errc::result_out_of_range || n > max) {
          return fmt::format("\"{}\" is too large: it must be at most {}", v, max);
        }
        if (n < min) return fmt::format("\"{}\" is too small: it must be at least {}", v, min);
        v = std::to_string(n);  // "010" -> "10": CLI11 would read it as octal
        return {};
      },
      "", kWholeNumber);
}

void require_whole_numbers(CLI::App& app) {
  for (CLI::Option* o : app.get_options()) {
    const std::string type = o->get_type_name();
    if (!type.starts_with("UINT") && !type.starts_with("INT")) continue;
    try {
      o->get_validator(kWholeNumber);
    } catch (const CLI::OptionNotFound&) {
      throw std::logic_error("ringbus " + app.get_name() + " " + o->get_name() + ": an integer option not added by add_number");
    }
  }
  for (CLI::App* sub : app.get_subcommands(std::function<bool(CLI::App*)>{})) require_whole_numbers(*sub);
}

Segment::Naming NameWatch::look() {
  const auto now = std::chrono::steady_clock::now();
  if (now - looked_at_ < std::chrono::seconds(1)) return Segment::Naming::this_segment;
  looked_at_ = now;
  return seg_.naming();
}

int end_if_unnamed(NameWatch& names, std::string_view command) {
  const Segment::Naming naming = names.look();
  if (naming == Segment::Naming::this_segment) return -1;
  const Segment& seg = names.segment();
  flush_out();
  if (naming == Segment::Naming::nothing) {
    print_err("ringbus {}: segment {} was removed: no event can come to it again; stopped\n", command,
              seg.location().display());
    return kOk;
  }
  print_err("ringbus {}: segment {} was replaced by another of that name (create --replace): stopped following the "
            "old one; run the command again to follow the new one\n",
            command, seg.location().display());
  return kFailed;
}

namespace {
int g_output_error = 0;  // the first errno a write to standard output failed with
}  // namespace

void note_output_error(int err) noexcept {
  if (g_output_error == 0) g_output_error = err != 0 ? err : EIO;
}

bool write_out(std::string_view text) {
  if (std::fwrite(text.data(), 1, text.size(), stdout) == text.size()) return true;
  note_output_error(errno);
  return false;
}

bool flush_out() {
  if (std::fflush(stdout) == 0) return true;
  note_output_error(errno);
  return false;
}

int finish_output(int exit_code) {
  flush_out();
  if (std::ferror(stdout) == 0) return exit_code;
  if (g_output_error == EPIPE) return exit_code;
  print_err("ringbus: cannot write standard output: {}\n",
            g_output_error != 0 ? std::strerror(g_output_error) : "a write failed");
  return exit_code == kOk ? kFailed : exit_code;
}

std::optional<SchemaRegistry> registry_of(const Segment& seg) {
  if (seg.refs().registry == nullptr) return std::nullopt;
  return SchemaRegistry(seg);
}

std::string with_commas(std::uint64_t n) {
  const std::string digits = std::to_string(n);
  std::string out;
  out.reserve(digits.size() + digits.size() / 3);
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i != 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

std::vector<int> parse_cpus(const std::string& text) {
  std::vector<int> out;
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t comma = text.find(',', start);
    const std::string part = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (part.empty() || part.find_first_not_of("0123456789") != std::string::npos) {
      throw CLI::ValidationError("--cpus", "\"" + text + "\" is not a list of CPU numbers such as 0,1");
    }
    int cpu = 0;
    const auto [rest, ec] = std::from_chars(part.data(), part.data() + part.size(), cpu);
    if (ec != std::errc{} || rest != part.data() + part.size()) {
      throw CLI::ValidationError("--cpus", "\"" + part + "\" is not a CPU number");
    }
    out.push_back(cpu);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

}  // namespace ringbus::tool
