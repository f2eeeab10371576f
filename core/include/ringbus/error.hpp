// Errors of the cold paths (create, open, attach, join): thrown, with a code and a
// message that names the segment and what was wrong with it.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

namespace ringbus {

enum class Errc : std::uint8_t {
  invalid_name,      // a segment or group name that is empty, too long or has '/' or ".."
  invalid_options,   // sizes that are zero, not a power of two, or inconsistent
  exists,            // create: a segment of that name is already there
  not_found,         // open: no such segment
  permission,        // the OS refused access
  foreign,           // the file is not a ringbus segment (bad magic)
  truncated,         // the file is shorter than its header says
  version_mismatch,  // a layout major version this library does not speak
  not_initialised,   // the creator has not finished (or died) writing the header
  corrupt,           // a header or table failed validation
  owner_mismatch,    // owned by another user and not explicitly allowed
  mode_widened,      // permission bits wider than those the creator asked for
  no_space,          // /dev/shm or the file system cannot hold the segment
  no_slot,           // all producer / group / worker slots are in use
  busy,              // the group worker is run by another live process
  system,            // another OS error (errno in the message)
  pid_namespace,     // open: the segment's processes are in another pid namespace
};

std::string_view to_string(Errc e) noexcept;

// `text` as a message shows it: control bytes (below 0x20, and 0x7f) as \xHH, so that
// a NUL does not cut the message short and an escape sequence does not reach the
// terminal. Other bytes, UTF-8 included, are kept.
std::string printable(std::string_view text);

class Error : public std::runtime_error {
 public:
  Error(Errc code, const std::string& message) : std::runtime_error(message), code_(code) {}
  [[nodiscard]] Errc code() const noexcept { return code_; }

 private:
  Errc code_;
};

}  // namespace ringbus
