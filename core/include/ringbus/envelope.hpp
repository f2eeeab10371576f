// The event envelope used across event-driven systems, and how it maps to a record:
//
//   envelope field   record
//   --------------   -----------------------------------------------------------------
//   event_type       header type_id, through the schema registry (the name is kept there)
//   version          header schema_version (1..65535; default 1)
//   timestamp        header timestamp_ns (ISO-8601 in JSON; UTC nanoseconds in the record)
//   key              header key = key_of(key) (0 when absent); the string in the payload
//   correlation_id   header correlation_id = key_of(correlation_id) (0 when absent); the
//                    string in the payload
//   event_id         payload
//   source           payload
//   causation_id     payload
//   data             payload: the JSON text of the value, minified (numbers kept as written)
//
// The record carries record_flags::envelope. Its payload is:
//
//   0   u32  magic "RBE1"
//   4   u16  lengths of event_id, source, correlation_id, causation_id, key
//   14  u16  reserved (0)
//   16  u32  length of data
//   20       the five strings, then data
//
// Decoding bounds every length by the payload's size.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "ringbus/event.hpp"
#include "ringbus/status.hpp"

namespace ringbus {

class Producer;
class SchemaRegistry;

struct Envelope {
  std::string event_id;
  std::string event_type;
  std::uint16_t version = 1;
  std::uint64_t timestamp_ns = 0;  // 0: the time of publishing
  std::string source;
  std::string correlation_id;
  std::string causation_id;
  std::string key;   // empty: unkeyed
  std::string data;  // JSON text
};

// The envelope fields of a record's payload (views into it).
struct EnvelopeView {
  std::string_view event_id;
  std::string_view source;
  std::string_view correlation_id;
  std::string_view causation_id;
  std::string_view key;
  std::string_view data;
};

inline constexpr std::uint32_t kEnvelopeMagic = 0x31454252;  // "RBE1"
inline constexpr std::size_t kEnvelopeFixed = 20;
inline constexpr std::size_t kMaxEnvelopeString = 65535;

// Bytes of the payload that carries `e`; 0 if a string is longer than 65535 bytes.
std::size_t envelope_payload_size(const Envelope& e) noexcept;
// Writes the payload (out.size() == envelope_payload_size(e)).
void encode_envelope_payload(const Envelope& e, std::span<std::byte> out) noexcept;
// The envelope fields of `payload`, or nullopt if it is not a well-formed envelope.
std::optional<EnvelopeView> decode_envelope_payload(std::span<const std::byte> payload) noexcept;
// The envelope of an event published with publish_envelope (flag envelope), or nullopt.
std::optional<EnvelopeView> envelope_of(const Event& e) noexcept;

// Publishes `e`: registers its type (and version), fills the header fields. Waits while
// the log is full, up to `timeout`. Status::too_large if the payload exceeds max_event;
// Status::invalid if a string is longer than 65535 bytes or the version is 0;
// Status::types_full if its event type is new and the registry has no room for it
// (nothing is claimed). Throws Error(invalid_name) for an event type that is empty or
// longer than the registry holds (SchemaRegistry::register_type).
Status publish_envelope(Producer& producer, SchemaRegistry& registry, const Envelope& e,
                        std::chrono::nanoseconds timeout = std::chrono::nanoseconds::max());

// ISO-8601 / RFC 3339 date-time (e.g. 2026-11-22T10:00:00.123456789Z, or with a +hh:mm
// offset) to nanoseconds since the Unix epoch in 64 bits: 1970-01-01T00:00:00Z to
// 2554-07-21T23:34:33.709551615Z. nullopt if malformed or outside that range.
std::optional<std::uint64_t> parse_iso8601(std::string_view text) noexcept;
// The same, saying which: a well-formed date-time outside the range is out_of_range.
enum class Iso8601 : std::uint8_t { ok, malformed, out_of_range };
Iso8601 parse_iso8601(std::string_view text, std::uint64_t& ns) noexcept;
// UTC, with as many fraction digits as needed (none for a whole second).
std::string format_iso8601(std::uint64_t ns);

}  // namespace ringbus
