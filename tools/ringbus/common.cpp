#include "common.hpp"

#include <fmt/format.h>

#include <cctype>

namespace ringbus::tool {

void SegmentArg::add_to(CLI::App* cmd) {
  cmd->add_option("name", name, "Segment: a shared-memory name, or a file path if it contains '/'")->required();
  cmd->add_option("--path", path, "File path of a file-backed segment (overrides NAME)");
}

Location SegmentArg::location() const {
  if (!path.empty()) return Location::file(path);
  return Location::parse(name);
}

std::uint64_t parse_size(const std::string& text) {
  std::size_t i = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i])) != 0) ++i;
  if (i == 0) throw CLI::ValidationError("size", "\"" + text + "\" is not a size (e.g. 4096, 64K, 16M, 1G)");
  std::uint64_t n = std::stoull(text.substr(0, i));
  std::string unit = text.substr(i);
  for (char& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (unit == "" || unit == "B") return n;
  if (unit == "K" || unit == "KB" || unit == "KIB") return n << 10;
  if (unit == "M" || unit == "MB" || unit == "MIB") return n << 20;
  if (unit == "G" || unit == "GB" || unit == "GIB") return n << 30;
  throw CLI::ValidationError("size", "\"" + text + "\" has an unknown unit (use K, M or G)");
}

std::string human_bytes(std::uint64_t n) {
  if (n >= (1ull << 30) && n % (1ull << 30) == 0) return fmt::format("{} GiB", n >> 30);
  if (n >= (1ull << 20) && n % (1ull << 20) == 0) return fmt::format("{} MiB", n >> 20);
  if (n >= (1ull << 10) && n % (1ull << 10) == 0) return fmt::format("{} KiB", n >> 10);
  return fmt::format("{} B", n);
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
      throw CLI::ValidationError("cpus", "\"" + text + "\" is not a list of CPU numbers such as 0,1");
    }
    out.push_back(std::stoi(part));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

}  // namespace ringbus::tool
