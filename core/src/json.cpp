// JSON lines with simdjson's on-demand API. Errors are error codes (no exceptions).
#include "ringbus/json.hpp"

#include <simdjson.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <vector>

#include "ringbus/hash.hpp"
#include "ringbus/layout.hpp"
#include "ringbus/registry.hpp"

namespace ringbus {
namespace {

namespace od = simdjson::ondemand;
using simdjson::error_code;
using simdjson::SUCCESS;

std::string_view trim(std::string_view s) noexcept {
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\n' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

// The JSON number grammar: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? (any length).
bool json_number(std::string_view s) noexcept {
  std::size_t i = 0;
  auto digit = [&](std::size_t k) { return k < s.size() && s[k] >= '0' && s[k] <= '9'; };
  if (i < s.size() && s[i] == '-') ++i;
  if (!digit(i)) return false;
  if (s[i] == '0') {
    ++i;
  } else {
    while (digit(i)) ++i;
  }
  if (i < s.size() && s[i] == '.') {
    ++i;
    if (!digit(i)) return false;
    while (digit(i)) ++i;
  }
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
    if (!digit(i)) return false;
    while (digit(i)) ++i;
  }
  return i == s.size();
}

// Length of the valid UTF-8 sequence starting at s[i] (1..4), or 0 if none starts there.
std::size_t utf8_sequence_at(std::string_view s, std::size_t i) noexcept {
  const auto c = static_cast<unsigned char>(s[i]);
  const std::size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
  if (n == 0 || i + n > s.size()) return 0;
  for (std::size_t k = 1; k < n; ++k) {
    if ((static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80) return 0;
  }
  if (n == 2 && c < 0xc2) return 0;  // overlong
  if (n == 3) {
    const auto c1 = static_cast<unsigned char>(s[i + 1]);
    if ((c == 0xe0 && c1 < 0xa0) || (c == 0xed && c1 >= 0xa0)) return 0;  // overlong, surrogate
  }
  if (n == 4) {
    const auto c1 = static_cast<unsigned char>(s[i + 1]);
    if ((c == 0xf0 && c1 < 0x90) || c > 0xf4 || (c == 0xf4 && c1 >= 0x90)) return 0;
  }
  return n;
}

// Offset of the first byte that is not part of valid UTF-8, or npos.
std::size_t invalid_utf8_at(std::string_view s) noexcept {
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t n = utf8_sequence_at(s, i);
    if (n == 0) return i;
    i += n;
  }
  return std::string_view::npos;
}

// Walks every token of `v`; on failure `at` holds the offset (from `base`) of the
// token at fault.
error_code walk(od::value v, const char* base, std::size_t& at, int depth) {
  if (depth > 256) return simdjson::DEPTH_ERROR;
  at = static_cast<std::size_t>(v.raw_json_token().data() - base);
  od::json_type t{};
  if (error_code e = v.type().get(t)) return e;
  switch (t) {
    case od::json_type::object: {
      od::object o;
      if (error_code e = v.get_object().get(o)) return e;
      for (auto f : o) {
        od::field field;
        if (error_code e = std::move(f).get(field)) return e;
        std::string_view key;
        if (error_code e = field.unescaped_key().get(key)) return e;
        if (error_code e = walk(field.value(), base, at, depth + 1)) return e;
      }
      return SUCCESS;
    }
    case od::json_type::array: {
      od::array a;
      if (error_code e = v.get_array().get(a)) return e;
      for (auto item : a) {
        od::value x;
        if (error_code e = std::move(item).get(x)) return e;
        if (error_code e = walk(x, base, at, depth + 1)) return e;
      }
      return SUCCESS;
    }
    case od::json_type::string: {
      std::string_view s;
      return v.get_string().get(s);
    }
    case od::json_type::number:
      return json_number(trim(v.raw_json_token())) ? SUCCESS : simdjson::NUMBER_ERROR;
    case od::json_type::boolean: {
      bool b = false;
      return v.get_bool().get(b);
    }
    case od::json_type::null: {
      bool is = false;
      if (error_code e = v.is_null().get(is)) return e;
      return is ? SUCCESS : simdjson::N_ATOM_ERROR;
    }
  }
  return simdjson::INCORRECT_TYPE;
}

// How the object or array that starts at s[from] closes, following strings and
// escapes: `end` (exclusive) of the container, npos if it never closes; or, if a
// bracket closes the wrong kind (`{"a":1]`), that bracket's offset in `mismatch` and
// its opener's in `opener`. Used to tell a truncated line or a stray bracket from text
// after the object, which simdjson reports alike.
struct Brackets {
  std::size_t end = std::string_view::npos;
  std::size_t mismatch = std::string_view::npos;
  std::size_t opener = std::string_view::npos;
};
Brackets match_brackets(std::string_view s, std::size_t from) {
  Brackets b;
  std::vector<std::size_t> open;  // offsets of the brackets not closed yet
  bool in_string = false;
  for (std::size_t i = from; i < s.size(); ++i) {
    const char c = s[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      open.push_back(i);
    } else if (c == '}' || c == ']') {
      if (open.empty()) return b;
      if (s[open.back()] != (c == '}' ? '{' : '[')) {
        b.mismatch = i;
        b.opener = open.back();
        return b;
      }
      open.pop_back();
      if (open.empty()) {
        b.end = i + 1;
        return b;
      }
    }
  }
  return b;
}

std::size_t first_non_space(std::string_view s, std::size_t from) noexcept {
  while (from < s.size() && (s[from] == ' ' || s[from] == '\t' || s[from] == '\n' || s[from] == '\r')) ++from;
  return from;
}

// One parser per use: parse_envelope_json validates `data` with is_json while it is still
// iterating the line, and an on-demand parser serves one document at a time.
od::parser& line_parser() {
  static thread_local od::parser p;
  return p;
}
od::parser& value_parser() {
  static thread_local od::parser p;
  return p;
}

std::string describe(error_code e) { return simdjson::error_message(e); }

// Appends `s` as a JSON string literal. A byte that does not begin valid UTF-8 (text
// read from shared memory is untrusted) becomes U+FFFD, so the literal is always JSON.
void append_escaped(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out += '"';
  for (std::size_t i = 0; i < s.size();) {
    const char c = s[i];
    const std::size_t n = utf8_sequence_at(s, i);
    if (n == 0) {
      out += "\\ufffd";
      ++i;
      continue;
    }
    if (n > 1) {
      out.append(s.data() + i, n);
      i += n;
      continue;
    }
    ++i;
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += "\\u00";
          out += kHex[(c >> 4) & 0xf];
          out += kHex[c & 0xf];
        } else {
          out += c;
        }
    }
  }
  out += '"';
}

// What the brackets of a line that starts an object say is wrong with it: a bracket
// that closes the wrong opener, an object never closed (a truncated line: simdjson calls
// it an improper structure, or an unclosed string), or content after it; nullopt if
// they say nothing, or the line does not start an object.
std::optional<JsonLineError> structure_error(std::string_view line) {
  const std::size_t start = first_non_space(line, 0);
  if (start >= line.size() || line[start] != '{') return std::nullopt;
  const Brackets b = match_brackets(line, start);
  if (b.mismatch != std::string_view::npos) {
    return JsonLineError{b.mismatch, "", std::string("'") + line[b.mismatch] + "' does not close the '" +
                                             line[b.opener] + "' at column " + std::to_string(b.opener + 1)};
  }
  if (b.end == std::string_view::npos) {
    return JsonLineError{line.size(), "", "the JSON object is not closed (truncated line?)"};
  }
  if (first_non_space(line, b.end) < line.size()) {
    return JsonLineError{first_non_space(line, b.end), "", "trailing content after the object"};
  }
  return std::nullopt;
}

// Offset of the first control character (below 0x20) inside a string of `s`, which JSON
// requires escaped (simdjson reports it for the whole text, UNESCAPED_CHARS); npos if none.
std::size_t unescaped_control_at(std::string_view s) noexcept {
  bool in_string = false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (!in_string) {
      in_string = c == '"';
    } else if (c == '\\') {
      ++i;
      if (i < s.size() && static_cast<unsigned char>(s[i]) < 0x20) return i;
    } else if (c == '"') {
      in_string = false;
    } else if (c < 0x20) {
      return i;
    }
  }
  return std::string_view::npos;
}

// A control character that JSON requires escaped, found in a string at `at`.
std::string unescaped_control(std::string_view text, std::size_t at) {
  const unsigned c = static_cast<unsigned char>(text[at]);
  std::array<char, 96> buf{};
  std::snprintf(buf.data(), buf.size(), "a string holds a control character (0x%02x): JSON requires it escaped, as \\u%04x",
                c, c);
  return buf.data();
}

// is_json, with the error and its offset in `at`.
error_code json_error(std::string_view text, std::size_t& at) {
  at = invalid_utf8_at(text);
  if (at != std::string_view::npos) return simdjson::UTF8_ERROR;
  at = 0;
  const simdjson::padded_string padded(text);
  od::document doc;
  error_code e = value_parser().iterate(padded).get(doc);
  if (e == simdjson::UNESCAPED_CHARS) {
    at = std::min(unescaped_control_at(text), text.size());
    return e;
  }
  if (e == SUCCESS) {
    od::json_type t{};
    e = doc.type().get(t);
    if (e == SUCCESS) {
      if (t == od::json_type::object || t == od::json_type::array) {
        od::value v;
        e = doc.get_value().get(v);
        if (e == SUCCESS) {
          e = walk(v, padded.data(), at, 0);
          // Nothing may follow the value: a location still in bounds is a token after it.
          const char* loc = nullptr;
          if (e == SUCCESS && doc.current_location().get(loc) == SUCCESS) {
            e = simdjson::TRAILING_CONTENT;
            at = static_cast<std::size_t>(loc - padded.data());
          }
        } else {
          const Brackets b = match_brackets(text, first_non_space(text, 0));
          at = b.mismatch != std::string_view::npos ? b.mismatch
               : b.end == std::string_view::npos    ? text.size()
                                                    : first_non_space(text, b.end);
        }
      } else {
        // A scalar document: its token must reach the end of the text.
        std::string_view tok;
        e = doc.raw_json_token().get(tok);
        at = 0;
        if (e == SUCCESS && tok.data() + tok.size() < padded.data() + text.size()) {  // the token is in `padded`
          e = simdjson::TRAILING_CONTENT;
          at = static_cast<std::size_t>(tok.data() + tok.size() - padded.data());
        }
        if (e == SUCCESS) {
          if (t == od::json_type::number) {
            e = json_number(trim(tok)) ? SUCCESS : simdjson::NUMBER_ERROR;
          } else if (t == od::json_type::string) {
            std::string_view s;
            e = doc.get_string().get(s);
          } else if (t == od::json_type::boolean) {
            // The atom itself, spelled out: simdjson's root atom checks let a non-structural
            // character follow the literal ("null+").
            const std::string_view atom = trim(tok);
            e = atom == "true" || atom == "false" ? SUCCESS : simdjson::T_ATOM_ERROR;
          } else {
            e = trim(tok) == "null" ? SUCCESS : simdjson::N_ATOM_ERROR;
          }
        }
      }
    }
  }
  at = std::min(at, text.size());
  return e;
}

}  // namespace

bool is_json(std::string_view text, std::size_t* error_at) {
  std::size_t at = 0;
  const error_code e = json_error(text, at);
  if (e != SUCCESS && error_at != nullptr) *error_at = at;
  return e == SUCCESS;
}

std::string minify_json(std::string_view text) {
  std::string out(text.size() + simdjson::SIMDJSON_PADDING, '\0');
  std::size_t n = 0;
  if (simdjson::minify(text.data(), text.size(), out.data(), n) != SUCCESS) return std::string(text);
  out.resize(n);
  return out;
}

std::string json_string(std::string_view text) {
  std::string out;
  out.reserve(text.size() + 2);
  append_escaped(out, text);
  return out;
}

std::optional<JsonLineError> parse_envelope_json(std::string_view line, Envelope& out) {
  out = Envelope{};
  if (const std::size_t bad = invalid_utf8_at(line); bad != std::string_view::npos) {
    return JsonLineError{bad, "", "invalid UTF-8"};
  }
  const simdjson::padded_string padded(line);
  const char* base = padded.data();
  od::document doc;
  if (error_code e = line_parser().iterate(padded).get(doc)) {
    if (e == simdjson::UNESCAPED_CHARS) {
      if (const std::size_t at = unescaped_control_at(line); at != std::string_view::npos) {
        return JsonLineError{at, "", unescaped_control(line, at)};
      }
    }
    return structure_error(line).value_or(JsonLineError{0, "", "not JSON: " + describe(e)});
  }
  auto location = [&]() -> std::size_t {
    const char* loc = nullptr;
    return doc.current_location().get(loc) == SUCCESS ? static_cast<std::size_t>(loc - base) : line.size();
  };
  od::object obj;
  if (error_code e = doc.get_object().get(obj)) {
    const std::size_t start = first_non_space(line, 0);
    if (start >= line.size() || line[start] != '{') return JsonLineError{start, "", "the line is not a JSON object"};
    return structure_error(line).value_or(JsonLineError{start, "", "malformed JSON: " + describe(e)});
  }
  enum Field { event_id, event_type, version, timestamp, source, correlation_id, causation_id, key, data, kFields };
  static_assert(kFields == kEnvelopeFields.size());
  static_assert(kEnvelopeFields[event_id] == "event_id" && kEnvelopeFields[event_type] == "event_type" &&
                kEnvelopeFields[version] == "version" && kEnvelopeFields[timestamp] == "timestamp" &&
                kEnvelopeFields[source] == "source" && kEnvelopeFields[correlation_id] == "correlation_id" &&
                kEnvelopeFields[causation_id] == "causation_id" && kEnvelopeFields[key] == "key" &&
                kEnvelopeFields[data] == "data");
  bool seen[kFields] = {};
  for (auto f : obj) {
    od::field field;
    if (error_code e = std::move(f).get(field)) {
      return structure_error(line).value_or(JsonLineError{location(), "", "malformed JSON: " + describe(e)});
    }
    std::string_view name;
    if (error_code e = field.unescaped_key().get(name)) {
      return JsonLineError{location(), "", "malformed field name: " + describe(e)};
    }
    od::value& v = field.value();
    const std::size_t at = static_cast<std::size_t>(v.raw_json_token().data() - base);
    int which = -1;
    for (int i = 0; i < kFields; ++i) {
      if (name == kEnvelopeFields[i]) which = i;
    }
    const std::string field_name(name);
    if (which < 0) {
      std::string known;
      for (const std::string_view n : kEnvelopeFields) known += (known.empty() ? "" : ", ") + std::string(n);
      return JsonLineError{at, field_name, "is not an envelope field (the fields: " + known + ")"};
    }
    if (seen[which]) return JsonLineError{at, field_name, "appears twice"};
    seen[which] = true;
    auto get_text = [&](std::string& dst, std::size_t max, bool non_empty) -> std::optional<JsonLineError> {
      std::string_view s;
      if (error_code e = v.get_string().get(s)) {
        return JsonLineError{at, field_name, e == simdjson::INCORRECT_TYPE ? "must be a string" : describe(e)};
      }
      if (s.size() > max) return JsonLineError{at, field_name, "is longer than " + std::to_string(max) + " bytes"};
      if (non_empty && s.empty()) return JsonLineError{at, field_name, "must not be empty"};
      dst.assign(s);
      return std::nullopt;
    };
    std::optional<JsonLineError> err;
    switch (which) {
      case event_type: err = get_text(out.event_type, layout::kTypeNameBytes - 1, true); break;
      case event_id: err = get_text(out.event_id, kMaxEnvelopeString, false); break;
      case source: err = get_text(out.source, kMaxEnvelopeString, false); break;
      case correlation_id: err = get_text(out.correlation_id, kMaxEnvelopeString, false); break;
      case causation_id: err = get_text(out.causation_id, kMaxEnvelopeString, false); break;
      case key: err = get_text(out.key, kMaxEnvelopeString, true); break;
      case version: {
        std::int64_t n = 0;
        if (v.get_int64().get(n) != SUCCESS || n < 1 || n > 65535) {
          err = JsonLineError{at, field_name, "must be an integer from 1 to 65535"};
        } else {
          out.version = static_cast<std::uint16_t>(n);
        }
        break;
      }
      case timestamp: {
        std::string text;
        err = get_text(text, 64, true);
        if (!err) {
          std::uint64_t ns = 0;
          const Iso8601 parsed = parse_iso8601(text, ns);
          if (parsed == Iso8601::malformed) {
            err = JsonLineError{at, field_name,
                                "must be an ISO-8601 date-time with a time zone, like 2026-11-22T10:00:00.123Z"};
          } else if (parsed == Iso8601::out_of_range || ns == 0) {
            // A record's timestamp is 64-bit nanoseconds, and 0 means "none" (publish stamps it).
            err = JsonLineError{at, field_name,
                                "must be after 1970-01-01T00:00:00Z and at most 2554-07-21T23:34:33.709551615Z "
                                "(nanoseconds since the Unix epoch in 64 bits)"};
          } else {
            out.timestamp_ns = ns;
          }
        }
        break;
      }
      case data: {
        od::json_type t{};
        if (error_code e = v.type().get(t)) {
          err = JsonLineError{at, field_name, "malformed value: " + describe(e)};
          break;
        }
        std::string_view raw;
        error_code e = SUCCESS;
        if (t == od::json_type::object) {
          od::object o;
          e = v.get_object().get(o);
          if (e == SUCCESS) e = o.raw_json().get(raw);
        } else if (t == od::json_type::array) {
          od::array a;
          e = v.get_array().get(a);
          if (e == SUCCESS) e = a.raw_json().get(raw);
        } else {
          raw = trim(v.raw_json_token());
        }
        std::size_t bad = 0;
        if (e != SUCCESS) {
          err = JsonLineError{at, field_name, "malformed value: " + describe(e)};
        } else if (const error_code fault = json_error(raw, bad); fault != SUCCESS) {
          err = JsonLineError{at + bad, field_name,
                              fault == simdjson::DEPTH_ERROR ? "nests arrays and objects more than 256 levels deep"
                                                             : "is not valid JSON"};
        } else {
          out.data = minify_json(raw);
        }
        break;
      }
      default: break;
    }
    if (err) return err;
  }
  if (const char* loc = nullptr; doc.current_location().get(loc) == SUCCESS) {
    return JsonLineError{static_cast<std::size_t>(loc - base), "", "trailing content after the object"};
  }
  for (const Field required : {event_type, data}) {
    if (!seen[required]) return JsonLineError{0, std::string(kEnvelopeFields[required]), "is required"};
  }
  return std::nullopt;
}

std::string base64(std::span<const std::byte> bytes) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  std::size_t i = 0;
  auto at = [&](std::size_t k) { return std::to_integer<unsigned>(bytes[k]); };
  for (; i + 2 < bytes.size(); i += 3) {
    const unsigned v = (at(i) << 16) | (at(i + 1) << 8) | at(i + 2);
    for (int s = 18; s >= 0; s -= 6) out += kAlphabet[(v >> s) & 63];
  }
  if (i + 1 == bytes.size()) {
    const unsigned v = at(i) << 16;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == bytes.size()) {
    const unsigned v = (at(i) << 16) | (at(i + 1) << 8);
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

namespace {

bool envelope_printable(const EnvelopeView& v) {
  for (std::string_view f : {v.event_id, v.source, v.correlation_id, v.causation_id, v.key}) {
    if (invalid_utf8_at(f) != std::string_view::npos) return false;
  }
  return is_json(v.data);
}

}  // namespace

std::string event_json(const Event& e, const SchemaRegistry* registry) {
  std::string out = "{\"position\":" + std::to_string(e.position());
  if (e.key() != 0) out += ",\"key_seq\":" + std::to_string(e.key_seq());
  std::optional<TypeInfo> type;
  if (registry != nullptr) type = registry->info(e.type());
  std::optional<EnvelopeView> env = envelope_of(e);
  // Shown as its envelope only if it prints as one: strings UTF-8 and data JSON. Anything
  // else (bytes from a producer that bypassed publish_envelope, or damaged memory) prints
  // as a plain record with its payload in base64: the line stays JSON and loses nothing.
  if (env && !envelope_printable(*env)) env.reset();
  auto field = [&](const char* name, std::string_view value) {
    out += ",\"";
    out += name;
    out += "\":";
    append_escaped(out, value);
  };
  if (env && !env->event_id.empty()) field("event_id", env->event_id);
  if (type) {
    field("event_type", type->name);
  } else {
    out += ",\"type_id\":" + std::to_string(e.type());
  }
  out += ",\"version\":" + std::to_string(e.schema_version());
  if (e.timestamp_ns() != 0) field("timestamp", format_iso8601(e.timestamp_ns()));
  if (env) {
    if (!env->source.empty()) field("source", env->source);
    if (!env->correlation_id.empty()) field("correlation_id", env->correlation_id);
    if (!env->causation_id.empty()) field("causation_id", env->causation_id);
    if (!env->key.empty()) field("key", env->key);
    out += ",\"data\":";
    out += env->data;
    out += '}';
    return out;
  }
  if (e.key() != 0) out += ",\"key_id\":" + std::to_string(e.key());
  out += ",\"producer_id\":" + std::to_string(e.producer_id());
  out += ",\"producer_seq\":" + std::to_string(e.producer_seq());
  if (e.correlation_id() != 0) out += ",\"correlation\":" + std::to_string(e.correlation_id());
  out += ",\"data\":" + payload_json(e.payload());
  if (!payload_is_json(e.payload())) out += ",\"data_encoding\":\"base64\"";
  out += '}';
  return out;
}

bool payload_is_json(std::span<const std::byte> payload) {
  const std::string_view text(reinterpret_cast<const char*>(payload.data()), payload.size());
  return !text.empty() && is_json(text);
}

std::string payload_json(std::span<const std::byte> payload) {
  if (payload_is_json(payload)) {
    return minify_json(std::string_view(reinterpret_cast<const char*>(payload.data()), payload.size()));
  }
  std::string out = base64(payload);
  out.insert(out.begin(), '"');
  out += '"';
  return out;
}

}  // namespace ringbus
