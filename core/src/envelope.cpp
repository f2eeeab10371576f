#include "ringbus/envelope.hpp"

#include <array>
#include <cstring>
#include <limits>

#include "ringbus/clock.hpp"
#include "ringbus/hash.hpp"
#include "ringbus/producer.hpp"
#include "ringbus/registry.hpp"

namespace ringbus {
namespace {

void put16(std::byte* p, std::size_t v) noexcept {
  const auto x = static_cast<std::uint16_t>(v);
  std::memcpy(p, &x, 2);
}
void put32(std::byte* p, std::size_t v) noexcept {
  const auto x = static_cast<std::uint32_t>(v);
  std::memcpy(p, &x, 4);
}
std::uint32_t get(const std::byte* p, std::size_t n) noexcept {
  std::uint32_t x = 0;
  std::memcpy(&x, p, n);
  return x;
}

std::array<const std::string*, 5> strings_of(const Envelope& e) noexcept {
  return {&e.event_id, &e.source, &e.correlation_id, &e.causation_id, &e.key};
}

// Days since 1970-01-01 of a civil date (proleptic Gregorian).
std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) noexcept {
  y -= m <= 2;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

void civil_from_days(std::int64_t z, std::int64_t& y, unsigned& m, unsigned& d) noexcept {
  z += 719468;
  const std::int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const auto doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  d = doy - (153 * mp + 2) / 5 + 1;
  m = mp < 10 ? mp + 3 : mp - 9;
  y = static_cast<std::int64_t>(yoe) + era * 400 + (m <= 2);
}

bool digits(std::string_view s, std::size_t at, std::size_t n, unsigned& out) noexcept {
  if (at + n > s.size()) return false;
  out = 0;
  for (std::size_t i = at; i < at + n; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    out = out * 10 + static_cast<unsigned>(s[i] - '0');
  }
  return true;
}

}  // namespace

std::size_t envelope_payload_size(const Envelope& e) noexcept {
  std::size_t n = kEnvelopeFixed + e.data.size();
  for (const std::string* s : strings_of(e)) {
    if (s->size() > kMaxEnvelopeString) return 0;
    n += s->size();
  }
  return e.data.size() > 0xffffffffu ? 0 : n;
}

void encode_envelope_payload(const Envelope& e, std::span<std::byte> out) noexcept {
  std::byte* p = out.data();
  put32(p, kEnvelopeMagic);
  std::size_t at = 4;
  for (const std::string* s : strings_of(e)) {
    put16(p + at, s->size());
    at += 2;
  }
  put16(p + at, 0);
  put32(p + 16, e.data.size());
  at = kEnvelopeFixed;
  for (const std::string* s : strings_of(e)) {
    std::memcpy(p + at, s->data(), s->size());
    at += s->size();
  }
  std::memcpy(p + at, e.data.data(), e.data.size());
}

std::optional<EnvelopeView> decode_envelope_payload(std::span<const std::byte> payload) noexcept {
  if (payload.size() < kEnvelopeFixed || get(payload.data(), 4) != kEnvelopeMagic) return std::nullopt;
  std::size_t len[6];
  for (int i = 0; i < 5; ++i) len[i] = get(payload.data() + 4 + 2 * i, 2);
  len[5] = get(payload.data() + 16, 4);
  std::size_t total = kEnvelopeFixed;
  for (std::size_t l : len) total += l;
  if (total != payload.size()) return std::nullopt;
  const char* p = reinterpret_cast<const char*>(payload.data()) + kEnvelopeFixed;
  std::string_view fields[6];
  for (int i = 0; i < 6; ++i) {
    fields[i] = std::string_view(p, len[i]);
    p += len[i];
  }
  return EnvelopeView{fields[0], fields[1], fields[2], fields[3], fields[4], fields[5]};
}

std::optional<EnvelopeView> envelope_of(const Event& e) noexcept {
  if ((e.flags() & record_flags::envelope) == 0) return std::nullopt;
  return decode_envelope_payload(e.payload());
}

Status publish_envelope(Producer& producer, SchemaRegistry& registry, const Envelope& e,
                        std::chrono::nanoseconds timeout) {
  const std::size_t size = envelope_payload_size(e);
  if (size == 0 || e.version == 0) return Status::invalid;
  if (size > producer.segment().max_event()) return Status::too_large;
  const std::optional<std::uint16_t> type = registry.try_register_type(e.event_type, e.version);
  if (!type) return Status::types_full;
  Claim c;
  const Status s = producer.claim(e.key.empty() ? 0 : key_of(e.key), *type, static_cast<std::uint32_t>(size), c, timeout);
  if (s != Status::ok) return s;
  // The envelope's own time, else the claim's stamp, else (a producer with
  // Timestamps::none) the time now, before the payload's stores (DESIGN.md, "Claim and commit").
  if (e.timestamp_ns != 0) {
    c.set_timestamp_ns(e.timestamp_ns);
  } else if (c.timestamp_ns() == 0) {
    c.set_timestamp_ns(wall_clock_ns());
  }
  encode_envelope_payload(e, c.payload());
  c.set_schema_version(e.version);
  c.set_correlation_id(e.correlation_id.empty() ? 0 : key_of(e.correlation_id));
  c.set_flags(record_flags::envelope);
  c.commit();
  return Status::ok;
}

Iso8601 parse_iso8601(std::string_view s, std::uint64_t& ns) noexcept {
  unsigned y = 0, mo = 0, d = 0, h = 0, mi = 0, sec = 0;
  if (!digits(s, 0, 4, y) || s.size() < 20 || s[4] != '-' || !digits(s, 5, 2, mo) || s[7] != '-' ||
      !digits(s, 8, 2, d) || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') || !digits(s, 11, 2, h) ||
      s[13] != ':' || !digits(s, 14, 2, mi) || s[16] != ':' || !digits(s, 17, 2, sec)) {
    return Iso8601::malformed;
  }
  static constexpr unsigned kDays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  const bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  if (mo < 1 || mo > 12 || d < 1 || d > kDays[mo - 1] || (mo == 2 && d == 29 && !leap) || h > 23 ||
      mi > 59 || sec > 60) {
    return Iso8601::malformed;
  }
  std::size_t at = 19;
  std::uint64_t frac = 0;
  if (at < s.size() && (s[at] == '.' || s[at] == ',')) {
    ++at;
    std::size_t n = 0;
    while (at < s.size() && s[at] >= '0' && s[at] <= '9') {
      if (n < 9) frac = frac * 10 + static_cast<unsigned>(s[at] - '0');
      ++n;
      ++at;
    }
    if (n == 0) return Iso8601::malformed;
    for (std::size_t k = n; k < 9; ++k) frac *= 10;
  }
  std::int64_t offset = 0;
  if (at < s.size() && (s[at] == 'Z' || s[at] == 'z')) {
    ++at;
  } else if (at < s.size() && (s[at] == '+' || s[at] == '-')) {
    unsigned oh = 0, om = 0;
    if (!digits(s, at + 1, 2, oh) || at + 3 >= s.size() || s[at + 3] != ':' || !digits(s, at + 4, 2, om) || oh > 23 ||
        om > 59) {
      return Iso8601::malformed;
    }
    offset = (s[at] == '+' ? 1 : -1) * static_cast<std::int64_t>(oh * 3600 + om * 60);
    at += 6;
  } else {
    return Iso8601::malformed;  // a time zone is required
  }
  if (at != s.size()) return Iso8601::malformed;
  const std::int64_t secs =
      days_from_civil(y, mo, d) * 86400 + static_cast<std::int64_t>(h * 3600 + mi * 60 + sec) - offset;
  // 64 bits of nanoseconds end at 2554-07-21T23:34:33.709551615Z.
  constexpr std::uint64_t kMaxSecs = std::numeric_limits<std::uint64_t>::max() / 1'000'000'000ull;
  constexpr std::uint64_t kMaxFrac = std::numeric_limits<std::uint64_t>::max() % 1'000'000'000ull;
  if (secs < 0) return Iso8601::out_of_range;
  const auto whole = static_cast<std::uint64_t>(secs);
  if (whole > kMaxSecs || (whole == kMaxSecs && frac > kMaxFrac)) return Iso8601::out_of_range;
  ns = whole * 1'000'000'000ull + frac;
  return Iso8601::ok;
}

std::optional<std::uint64_t> parse_iso8601(std::string_view text) noexcept {
  std::uint64_t ns = 0;
  if (parse_iso8601(text, ns) != Iso8601::ok) return std::nullopt;
  return ns;
}

std::string format_iso8601(std::uint64_t ns) {
  const auto secs = static_cast<std::int64_t>(ns / 1'000'000'000ull);
  std::uint64_t frac = ns % 1'000'000'000ull;
  std::int64_t y = 0;
  unsigned m = 0, d = 0;
  civil_from_days(secs / 86400, y, m, d);
  const std::int64_t rem = secs % 86400;
  char buf[48];
  int n = std::snprintf(buf, sizeof buf, "%04lld-%02u-%02uT%02lld:%02lld:%02lld", static_cast<long long>(y), m, d,
                        static_cast<long long>(rem / 3600), static_cast<long long>(rem / 60 % 60),
                        static_cast<long long>(rem % 60));
  if (frac != 0) {
    int digits_n = 9;
    while (frac % 10 == 0) {
      frac /= 10;
      --digits_n;
    }
    n += std::snprintf(buf + n, sizeof buf - static_cast<std::size_t>(n), ".%0*llu", digits_n,
                       static_cast<unsigned long long>(frac));
  }
  std::snprintf(buf + n, sizeof buf - static_cast<std::size_t>(n), "Z");
  return buf;
}

}  // namespace ringbus
