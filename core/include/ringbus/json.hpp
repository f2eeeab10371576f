// JSON lines in and out of ringbus (library ringbus::json, on simdjson's on-demand API).
//
// An input line is one JSON object, the event envelope (envelope.hpp):
//
//   {"event_id": "...", "event_type": "OrderPlaced", "version": 2,
//    "timestamp": "2026-11-22T10:00:00.123Z", "source": "...", "correlation_id": "...",
//    "causation_id": "...", "key": "order-42", "data": {...}}
//
// event_type (a string of 1..95 bytes) and data (any JSON value) are required; version is
// an integer 1..65535 (default 1); timestamp an ISO-8601 date-time with a time zone
// (default: the time of publishing); the other fields strings (key not empty). Unknown or
// repeated fields are errors. data is kept as written (minified; numbers of any size and
// precision are preserved).
#pragma once

#include <array>
#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "ringbus/envelope.hpp"
#include "ringbus/event.hpp"

namespace ringbus {

class SchemaRegistry;

struct JsonLineError {
  std::size_t offset = 0;  // byte offset within the line
  std::string field;       // the field at fault ("" for the line as a whole)
  std::string message;
};

// The envelope's fields, in the order above: what a line may hold.
inline constexpr std::array<std::string_view, 9> kEnvelopeFields = {
    "event_id", "event_type", "version", "timestamp", "source", "correlation_id", "causation_id", "key", "data"};

// Parses one line into `out`. Returns the error, or nullopt on success.
std::optional<JsonLineError> parse_envelope_json(std::string_view line, Envelope& out);

// True if `text` is one complete JSON value (any number size, arrays and objects nested
// at most 256 levels below the root); on failure `*error_at` is the byte offset of the
// problem when known.
bool is_json(std::string_view text, std::size_t* error_at = nullptr);
// `text` without insignificant whitespace (text must be valid JSON).
std::string minify_json(std::string_view text);
// A JSON string literal (with quotes) for `text`; a byte that does not begin valid UTF-8
// becomes U+FFFD, so the result is JSON whatever `text` holds.
std::string json_string(std::string_view text);

// One JSON line (no newline) describing `e`: an envelope event as its envelope (plus
// "position" and "key_seq"), any other event with its header fields and its payload as
// "data" (the payload itself when it is JSON, else a base64 string with
// "data_encoding": "base64"). An envelope whose strings are not UTF-8 or whose data is
// not JSON prints as any other event. `registry` names event types (may be null).
std::string event_json(const Event& e, const SchemaRegistry* registry);

std::string base64(std::span<const std::byte> bytes);
// A payload as a JSON value: itself (minified) when it is JSON, else a base64 string.
std::string payload_json(std::span<const std::byte> payload);
bool payload_is_json(std::span<const std::byte> payload);

}  // namespace ringbus
