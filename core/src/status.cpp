#include "ringbus/error.hpp"
#include "ringbus/status.hpp"

namespace ringbus {

std::string_view to_string(Status s) noexcept {
  switch (s) {
    case Status::ok: return "ok";
    case Status::full: return "full";
    case Status::too_large: return "too_large";
    case Status::conflict: return "conflict";
    case Status::keys_full: return "keys_full";
    case Status::busy: return "busy";
    case Status::timeout: return "timeout";
    case Status::corrupt: return "corrupt";
    case Status::invalid: return "invalid";
    case Status::types_full: return "types_full";
    case Status::stopped: return "stopped";
    case Status::would_deadlock: return "would_deadlock";
  }
  return "unknown";
}

std::string_view to_string(Errc e) noexcept {
  switch (e) {
    case Errc::invalid_name: return "invalid_name";
    case Errc::invalid_options: return "invalid_options";
    case Errc::exists: return "exists";
    case Errc::not_found: return "not_found";
    case Errc::permission: return "permission";
    case Errc::foreign: return "foreign";
    case Errc::truncated: return "truncated";
    case Errc::version_mismatch: return "version_mismatch";
    case Errc::not_initialised: return "not_initialised";
    case Errc::corrupt: return "corrupt";
    case Errc::owner_mismatch: return "owner_mismatch";
    case Errc::mode_widened: return "mode_widened";
    case Errc::no_space: return "no_space";
    case Errc::no_slot: return "no_slot";
    case Errc::busy: return "busy";
    case Errc::system: return "system";
    case Errc::pid_namespace: return "pid_namespace";
  }
  return "unknown";
}

std::string printable(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    const auto b = static_cast<unsigned char>(c);
    if (b >= 0x20 && b != 0x7f) {
      out += c;
    } else {
      constexpr char kHex[] = "0123456789abcdef";
      out += {'\\', 'x', kHex[b >> 4], kHex[b & 15]};
    }
  }
  return out;
}

}  // namespace ringbus
