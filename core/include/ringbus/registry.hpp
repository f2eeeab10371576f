// The schema registry: event type names mapped to the 16-bit type ids records carry,
// kept in the segment (any process that opens it sees the same mapping), with the
// versions each type has been published in and the version readers should see.
// Upcasters (in-process hooks) turn an old version's data into the current one on read.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ringbus/segment.hpp"

namespace ringbus {

struct TypeInfo {
  std::uint16_t id = 0;
  std::string name;
  std::uint16_t current_version = 0;  // declared current version (0 = the highest seen)
  std::uint64_t versions_seen = 0;    // bit v-1: version v (1..64) has been published
  [[nodiscard]] std::uint16_t highest_seen() const noexcept {
    return versions_seen == 0 ? 0 : static_cast<std::uint16_t>(64 - __builtin_clzll(versions_seen));
  }
  // The version readers should be given: the declared one, else the highest seen.
  [[nodiscard]] std::uint16_t target_version() const noexcept {
    return current_version != 0 ? current_version : highest_seen();
  }
};

class SchemaRegistry {
 public:
  // The registry of `segment`; throws Error(not_found) if it was created without one.
  explicit SchemaRegistry(const Segment& segment);

  // The type id of `name` (1..95 bytes), registering the type if it is new, and noting
  // that `version` (1..64 is tracked) has been published. Throws Error(invalid_name) for
  // a bad name and Error(no_slot) when the registry is full.
  std::uint16_t register_type(std::string_view name, std::uint16_t version = 1);
  // As register_type, but a full registry is nullopt instead of an exception: for a
  // caller that refuses one event and goes on with the next (publish_envelope).
  std::optional<std::uint16_t> try_register_type(std::string_view name, std::uint16_t version = 1);
  [[nodiscard]] std::optional<std::uint16_t> find(std::string_view name) const;
  [[nodiscard]] std::optional<TypeInfo> info(std::uint16_t type_id) const;
  [[nodiscard]] std::vector<TypeInfo> list() const;
  // Declares the version readers should get (upcasters bring older data up to it).
  void set_current_version(std::uint16_t type_id, std::uint16_t version);

 private:
  Segment seg_;
};

// Upcasters: for an event type, functions that turn the data (JSON text) of version v
// into version v + 1. Registered in the process that reads; applied in a chain up to the
// registry's target version of the type.
class Upcasters {
 public:
  using Fn = std::function<std::string(std::string_view data)>;
  // The step from `from_version` (1 .. 65534) to the next, replacing one added before.
  // Throws Error(invalid_options) for an empty function or a version with no next.
  void add(std::string_view event_type, std::uint16_t from_version, Fn fn);
  // Data and version after applying every upcaster from `version` towards `target`
  // (stops at the first missing step).
  [[nodiscard]] std::pair<std::string, std::uint16_t> upcast(std::string_view event_type, std::uint16_t version,
                                                              std::string_view data, std::uint16_t target) const;

 private:
  std::map<std::pair<std::string, std::uint16_t>, Fn> steps_;
};

}  // namespace ringbus
