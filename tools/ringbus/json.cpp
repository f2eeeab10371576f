// JSON output helpers of the tool, on simdjson.
#include <simdjson.h>

#include "common.hpp"

namespace ringbus::tool {

std::string payload_json(std::span<const std::byte> bytes) {
  if (!bytes.empty()) {
    // Validates the document (and its UTF-8) in one pass; prints it minified.
    static thread_local simdjson::dom::parser parser;
    const simdjson::padded_string text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    simdjson::dom::element doc;
    if (parser.parse(text).get(doc) == simdjson::SUCCESS) return simdjson::minify(doc);
  }
  return "\"" + base64(bytes) + "\"";
}

}  // namespace ringbus::tool
