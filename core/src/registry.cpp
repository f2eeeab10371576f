#include "ringbus/registry.hpp"

#include <algorithm>
#include <cstring>

#include "ringbus/detail/robust_lock.hpp"
#include "ringbus/error.hpp"

namespace ringbus {
namespace {

std::string_view name_of(const layout::RegistryEntry& e) noexcept {
  return {e.name, std::min<std::size_t>(e.name_len, layout::kTypeNameBytes)};  // shared memory: bounded
}

bool ready(const layout::RegistryEntry& e) noexcept {
  return e.state.load(std::memory_order_acquire) == 1;  // pairs with the release in register_type
}

std::optional<std::uint16_t> lookup(const detail::SegmentRefs& r, std::string_view name) noexcept {
  for (std::uint32_t id = 1; id <= r.registry_slots; ++id) {
    const layout::RegistryEntry& e = *r.registry_entry(id);
    if (!ready(e)) return std::nullopt;  // entries are taken in order
    if (name_of(e) == name) return static_cast<std::uint16_t>(id);
  }
  return std::nullopt;
}

void note_version(layout::RegistryEntry& e, std::uint16_t version) noexcept {
  if (version >= 1 && version <= 64) e.versions.fetch_or(std::uint64_t{1} << (version - 1), std::memory_order_relaxed);
}

}  // namespace

SchemaRegistry::SchemaRegistry(const Segment& segment) : seg_(segment) {
  segment.require_open("open its schema registry");
  if (segment.refs().registry == nullptr) {
    throw Error(Errc::not_found,
                "segment " + segment.location().display() + ": created without a schema registry (registry_slots 0)");
  }
}

std::uint16_t SchemaRegistry::register_type(std::string_view name, std::uint16_t version) {
  if (auto id = try_register_type(name, version)) return *id;
  throw Error(Errc::no_slot, "segment " + seg_.location().display() + ": the schema registry is full (" +
                                 std::to_string(seg_.refs().registry_slots) + " event types)");
}

std::optional<std::uint16_t> SchemaRegistry::try_register_type(std::string_view name, std::uint16_t version) {
  seg_.require_writable("register an event type");
  const detail::SegmentRefs& r = seg_.refs();
  if (name.empty() || name.size() >= layout::kTypeNameBytes) {
    throw Error(Errc::invalid_name, "segment " + seg_.location().display() + ": event type \"" + printable(name) +
                                        "\" must be 1 to " + std::to_string(layout::kTypeNameBytes - 1) + " bytes");
  }
  if (auto id = lookup(r, name)) {
    note_version(*r.registry_entry(*id), version);
    return *id;
  }
  detail::RobustLock lock(r.registry->lock, r.registry->lock_start);
  if (auto id = lookup(r, name)) {  // registered while we waited
    note_version(*r.registry_entry(*id), version);
    return *id;
  }
  for (std::uint32_t id = 1; id <= r.registry_slots; ++id) {
    layout::RegistryEntry& e = *r.registry_entry(id);
    if (ready(e)) continue;
    std::memset(e.name, 0, sizeof e.name);
    std::memcpy(e.name, name.data(), name.size());
    e.name_len = static_cast<std::uint32_t>(name.size());
    e.versions.store(0, std::memory_order_relaxed);
    e.current_version.store(0, std::memory_order_relaxed);
    note_version(e, version);
    e.state.store(1, std::memory_order_release);  // publishes the name
    r.registry->types.fetch_add(1, std::memory_order_relaxed);
    return static_cast<std::uint16_t>(id);
  }
  return std::nullopt;
}

std::optional<std::uint16_t> SchemaRegistry::find(std::string_view name) const { return lookup(seg_.refs(), name); }

std::optional<TypeInfo> SchemaRegistry::info(std::uint16_t type_id) const {
  const detail::SegmentRefs& r = seg_.refs();
  if (type_id == 0 || type_id > r.registry_slots) return std::nullopt;
  const layout::RegistryEntry& e = *r.registry_entry(type_id);
  if (!ready(e)) return std::nullopt;
  TypeInfo t;
  t.id = type_id;
  t.name = std::string(name_of(e));
  t.current_version = static_cast<std::uint16_t>(e.current_version.load(std::memory_order_relaxed));
  t.versions_seen = e.versions.load(std::memory_order_relaxed);
  return t;
}

std::vector<TypeInfo> SchemaRegistry::list() const {
  std::vector<TypeInfo> out;
  for (std::uint32_t id = 1; id <= seg_.refs().registry_slots; ++id) {
    auto t = info(static_cast<std::uint16_t>(id));
    if (!t) break;
    out.push_back(std::move(*t));
  }
  return out;
}

void SchemaRegistry::set_current_version(std::uint16_t type_id, std::uint16_t version) {
  seg_.require_writable("set an event type's version");
  if (!info(type_id)) {
    throw Error(Errc::not_found, "segment " + seg_.location().display() + ": no event type with id " +
                                     std::to_string(type_id));
  }
  seg_.refs().registry_entry(type_id)->current_version.store(version, std::memory_order_relaxed);
}

void Upcasters::add(std::string_view event_type, std::uint16_t from_version, Fn fn) {
  const std::string step = "upcaster of \"" + printable(event_type) + "\" from version " + std::to_string(from_version);
  if (!fn) throw Error(Errc::invalid_options, step + ": no function");
  if (from_version == 0 || from_version == UINT16_MAX) {
    throw Error(Errc::invalid_options, step + ": versions are 1 to 65535, and a step goes to the next");
  }
  steps_[{std::string(event_type), from_version}] = std::move(fn);
}

std::pair<std::string, std::uint16_t> Upcasters::upcast(std::string_view event_type, std::uint16_t version,
                                                        std::string_view data, std::uint16_t target) const {
  std::string current(data);
  while (version < target) {
    const auto it = steps_.find({std::string(event_type), version});
    if (it == steps_.end()) break;
    current = it->second(current);
    ++version;
  }
  return {std::move(current), version};
}

}  // namespace ringbus
