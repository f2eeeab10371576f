// libFuzzer target: arbitrary bytes as a JSON line, as a record payload and as a JSON
// value. Parsing must report an error or produce an envelope that survives the payload
// codec unchanged; what ringbus prints as JSON must be JSON.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <span>
#include <string_view>
#include <vector>

#include "ringbus/envelope.hpp"
#include "ringbus/json.hpp"

namespace {

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_json: %s\n", what);
    std::abort();
  }
}

void line(std::string_view text) {
  ringbus::Envelope e;
  if (ringbus::parse_envelope_json(text, e)) return;  // an error, reported: fine
  check(ringbus::is_json(e.data), "accepted data is not JSON");
  check(ringbus::minify_json(e.data) == e.data, "stored data is not minified");
  const std::size_t n = ringbus::envelope_payload_size(e);
  if (n == 0) return;  // a string longer than the codec holds: publish refuses it
  std::vector<std::byte> payload(n);
  ringbus::encode_envelope_payload(e, payload);
  const auto v = ringbus::decode_envelope_payload(payload);
  check(v.has_value(), "an encoded envelope does not decode");
  check(v->event_id == e.event_id && v->source == e.source && v->correlation_id == e.correlation_id &&
            v->causation_id == e.causation_id && v->key == e.key && v->data == e.data,
        "the envelope changed through the payload codec");
  check(ringbus::is_json(ringbus::json_string(e.key)), "json_string is not JSON");
}

void payload(std::span<const std::byte> bytes) {
  (void)ringbus::decode_envelope_payload(bytes);
  const std::string_view text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  check(ringbus::is_json(ringbus::json_string(text)), "json_string of arbitrary bytes is not JSON");
  check(ringbus::is_json(ringbus::payload_json(bytes)), "payload_json is not JSON");
}

void value(std::string_view text) {
  if (!ringbus::is_json(text)) return;
  const std::string m = ringbus::minify_json(text);
  check(ringbus::is_json(m), "minified JSON is not JSON");
  check(ringbus::minify_json(m) == m, "minify is not idempotent");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 3) {
    case 0: line(text); break;
    case 1: payload(std::as_bytes(std::span(text.data(), text.size()))); break;
    default: value(text); break;
  }
  return 0;
}
