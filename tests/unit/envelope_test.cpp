// The event envelope: ISO-8601 times, the payload codec, the schema registry, upcasters,
// and JSON lines in and out.
#include <gtest/gtest.h>

#include <cstring>
#include <limits>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include "ringbus/consumer.hpp"
#include "ringbus/envelope.hpp"
#include "ringbus/error.hpp"
#include "ringbus/json.hpp"
#include "ringbus/layout.hpp"
#include "ringbus/producer.hpp"
#include "ringbus/registry.hpp"
#include "ringbus/stats.hpp"
#include "ringbus/tail_reader.hpp"
#include "support.hpp"

namespace ringbus {
namespace {

using test::TempSegment;

TEST(Iso8601, ParsesTheUsualFormsToUtcNanoseconds) {
  EXPECT_EQ(parse_iso8601("1970-01-01T00:00:00Z"), 0u);
  EXPECT_EQ(parse_iso8601("1970-01-01T00:00:01.5Z"), 1'500'000'000u);
  EXPECT_EQ(parse_iso8601("2026-11-22T10:00:00.123456789Z"), 1795341600'123456789ull);
  EXPECT_EQ(parse_iso8601("2026-11-22T12:00:00+02:00"), parse_iso8601("2026-11-22T10:00:00Z"));
  EXPECT_EQ(parse_iso8601("2026-11-22T07:30:00-02:30"), parse_iso8601("2026-11-22T10:00:00Z"));
  EXPECT_EQ(parse_iso8601("2024-02-29T00:00:00Z").has_value(), true) << "leap day";
  EXPECT_EQ(parse_iso8601("2026-11-22T10:00:00.1234567891Z"), 1795341600'123456789ull) << "beyond ns: truncated";
  EXPECT_EQ(parse_iso8601("2016-12-31T23:59:60Z"), parse_iso8601("2017-01-01T00:00:00Z")) << "a leap second";
  EXPECT_EQ(parse_iso8601("2000-02-29T00:00:00Z").has_value(), true) << "2000 is a leap year (divisible by 400)";
  EXPECT_FALSE(parse_iso8601("2100-02-29T00:00:00Z").has_value()) << "2100 is not (divisible by 100)";
  EXPECT_EQ(parse_iso8601("2026-11-22 10:00:00z"), parse_iso8601("2026-11-22T10:00:00Z")) << "RFC 3339's forms";
  EXPECT_EQ(parse_iso8601("2026-11-22t10:00:00Z"), parse_iso8601("2026-11-22T10:00:00Z"));
  EXPECT_EQ(parse_iso8601("1969-12-31T23:00:00-02:00"), 3600'000'000'000u) << "a 1969 local time after the epoch";
  for (const char* bad : {"", "2026-11-22", "2026-11-22T10:00:00", "2026-13-01T00:00:00Z", "2023-02-29T00:00:00Z",
                          "2026-11-31T00:00:00Z", "2026-11-22T24:00:00Z", "1969-12-31T23:59:59Z",
                          "2026-11-22T10:00:00.Z", "2026-11-22T10:00:00Zjunk", "2026-11-22T10:00:00+2:00",
                          "2026-11-22T10:00:61Z", "1970-01-01T00:30:00+01:00", "yesterday"}) {
    EXPECT_FALSE(parse_iso8601(bad).has_value()) << bad;
  }
  // The range of 64-bit nanoseconds, to the last one; beyond it nothing wraps around.
  EXPECT_EQ(parse_iso8601("2554-07-21T23:34:33.709551615Z"), std::numeric_limits<std::uint64_t>::max());
  EXPECT_EQ(parse_iso8601("2554-07-22T01:34:33.709551615+02:00"), std::numeric_limits<std::uint64_t>::max());
  std::uint64_t ns = 7;
  for (const char* far : {"2554-07-21T23:34:33.709551616Z", "2554-07-21T23:34:34Z", "9999-12-31T23:59:59Z",
                          "1969-12-31T23:59:59Z", "1970-01-01T00:30:00+01:00"}) {
    EXPECT_EQ(parse_iso8601(far, ns), Iso8601::out_of_range) << far;
    EXPECT_FALSE(parse_iso8601(far).has_value()) << far;
  }
  EXPECT_EQ(ns, 7u) << "nothing is written when out of range";
  EXPECT_EQ(parse_iso8601("2026-13-01T00:00:00Z", ns), Iso8601::malformed);
  EXPECT_EQ(parse_iso8601("yesterday", ns), Iso8601::malformed);
  EXPECT_EQ(parse_iso8601("1970-01-01T00:00:00.000000001Z", ns), Iso8601::ok);
  EXPECT_EQ(ns, 1u);
}

TEST(Iso8601, FormatsUtcWithTheFractionItNeeds) {
  EXPECT_EQ(format_iso8601(0), "1970-01-01T00:00:00Z");
  EXPECT_EQ(format_iso8601(1795341600'123000000ull), "2026-11-22T10:00:00.123Z");
  EXPECT_EQ(format_iso8601(1795341600'000000001ull), "2026-11-22T10:00:00.000000001Z");
  std::mt19937_64 rng(9);
  for (int i = 0; i < 10000; ++i) {
    const std::uint64_t ns = rng() % 4'000'000'000'000'000'000ull;
    EXPECT_EQ(parse_iso8601(format_iso8601(ns)), ns) << format_iso8601(ns);
  }
}

TEST(EnvelopeCodec, RoundTripsAndRejectsWhatDoesNotAddUp) {
  Envelope e;
  e.event_id = "ev-1";
  e.source = "checkout";
  e.correlation_id = "corr";
  e.causation_id = "";
  e.key = "order-42";
  e.data = R"({"total":12.5})";
  std::vector<std::byte> buf(envelope_payload_size(e));
  ASSERT_EQ(buf.size(), kEnvelopeFixed + 4 + 8 + 4 + 0 + 8 + e.data.size());
  encode_envelope_payload(e, buf);
  const auto v = decode_envelope_payload(buf);
  ASSERT_TRUE(v.has_value());
  EXPECT_EQ(v->event_id, "ev-1");
  EXPECT_EQ(v->source, "checkout");
  EXPECT_EQ(v->correlation_id, "corr");
  EXPECT_EQ(v->causation_id, "");
  EXPECT_EQ(v->key, "order-42");
  EXPECT_EQ(v->data, e.data);
  // Truncated, lengthened, foreign: refused, never read past the payload.
  EXPECT_FALSE(decode_envelope_payload(std::span(buf).first(buf.size() - 1)).has_value());
  std::vector<std::byte> longer = buf;
  longer.push_back(std::byte{0});
  EXPECT_FALSE(decode_envelope_payload(longer).has_value());
  std::vector<std::byte> foreign = buf;
  foreign[0] = std::byte{'X'};
  EXPECT_FALSE(decode_envelope_payload(foreign).has_value());
  std::mt19937 rng(3);
  for (int i = 0; i < 20000; ++i) {
    std::vector<std::byte> junk(rng() % 64);
    for (auto& b : junk) b = static_cast<std::byte>(rng());
    if (junk.size() >= 4) std::memcpy(junk.data(), &kEnvelopeMagic, 4);
    if (auto d = decode_envelope_payload(junk)) {
      const auto* lo = reinterpret_cast<const char*>(junk.data());
      for (std::string_view f : {d->event_id, d->source, d->correlation_id, d->causation_id, d->key, d->data}) {
        EXPECT_TRUE(f.empty() || (f.data() >= lo && f.data() + f.size() <= lo + junk.size()));
      }
    }
  }
  Envelope longest;
  longest.key.assign(kMaxEnvelopeString, 'k');
  EXPECT_EQ(envelope_payload_size(longest), kEnvelopeFixed + kMaxEnvelopeString) << "the longest string fits";
  Envelope too_long;
  too_long.key.assign(kMaxEnvelopeString + 1, 'k');
  EXPECT_EQ(envelope_payload_size(too_long), 0u);
}

// An envelope without a timestamp takes the claim's, or, from a producer that stamps
// nothing, the time it is published: an envelope always says when it happened.
TEST(EnvelopeCodec, AnEnvelopeWithoutATimestampTakesThePublishTime) {
  TempSegment seg;
  SchemaRegistry reg(seg.segment());
  Envelope e;
  e.event_type = "Ping";
  e.data = "{}";
  const std::uint64_t before = wall_clock_ns();
  for (const Timestamps stamps : {Timestamps::clock, Timestamps::none}) {
    Producer p = Producer::attach(seg.segment(), {.timestamps = stamps});
    ASSERT_EQ(publish_envelope(p, reg, e), Status::ok);
  }
  const std::uint64_t after = wall_clock_ns();
  TailReader t = TailReader::open(seg.segment(), TailStart::earliest);
  Event ev;
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(t.try_next(ev));
    EXPECT_GE(ev.timestamp_ns(), before) << i;
    EXPECT_LE(ev.timestamp_ns(), after) << i;
  }
}

// Only a record flagged as an envelope is read as one: a plain payload whose bytes
// happen to decode as an envelope stays a plain payload.
TEST(EnvelopeCodec, OnlyARecordFlaggedAsAnEnvelopeIsReadAsOne) {
  TempSegment seg;
  Envelope e;
  e.event_id = "look-alike";
  e.data = "{}";
  std::vector<std::byte> bytes(envelope_payload_size(e));
  encode_envelope_payload(e, bytes);
  ASSERT_TRUE(decode_envelope_payload(bytes).has_value());
  Producer p = Producer::attach(seg.segment());
  ASSERT_EQ(p.try_publish(0, 1, bytes), Status::ok);
  TailReader t = TailReader::open(seg.segment(), TailStart::earliest);
  Event ev;
  ASSERT_TRUE(t.try_next(ev));
  EXPECT_FALSE(envelope_of(ev).has_value());
  EXPECT_EQ(event_json(ev, nullptr).find("look-alike"), std::string::npos) << event_json(ev, nullptr);
}

TEST(SchemaRegistry, NamesTypesTracksVersionsAndIsSharedByProcesses) {
  TempSegment seg;
  SchemaRegistry reg(seg.segment());
  const std::uint16_t placed = reg.register_type("OrderPlaced");
  const std::uint16_t shipped = reg.register_type("OrderShipped", 3);
  EXPECT_NE(placed, shipped);
  EXPECT_EQ(reg.register_type("OrderPlaced", 2), placed);
  EXPECT_EQ(reg.find("OrderShipped"), shipped);
  EXPECT_FALSE(reg.find("Nope").has_value());
  const auto info = reg.info(placed);
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->name, "OrderPlaced");
  EXPECT_EQ(info->versions_seen, 0b11u);
  EXPECT_EQ(reg.register_type("OrderPlaced", 0), placed);
  EXPECT_EQ(reg.info(placed)->versions_seen, 0b11u) << "version 0 is accepted but not tracked";
  EXPECT_EQ(info->target_version(), 2u);
  // Versions 1..64 are tracked, one bit each; others are accepted but not tracked.
  EXPECT_EQ(reg.register_type("OrderShipped", 64), shipped);
  EXPECT_EQ(reg.register_type("OrderShipped", 65), shipped);
  EXPECT_EQ(reg.info(shipped)->versions_seen, (std::uint64_t{1} << 63) | 0b100u);
  EXPECT_FALSE(reg.info(0).has_value()) << "type id 0 is no type";
  EXPECT_EQ(reg.info(shipped)->highest_seen(), 64u);
  reg.set_current_version(placed, 5);
  EXPECT_EQ(reg.info(placed)->target_version(), 5u);
  try {
    reg.set_current_version(99, 1);
    ADD_FAILURE() << "a version was set on a type id that is not registered";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::not_found);
    EXPECT_NE(std::string(e.what()).find("no event type with id 99"), std::string::npos) << e.what();
  }
  // Another view of the segment (as another process would have) sees the same names.
  const Segment again = Segment::open(seg.location());
  SchemaRegistry other(again);
  EXPECT_EQ(other.find("OrderPlaced"), placed);
  EXPECT_EQ(other.list().size(), 2u);
  EXPECT_THROW(reg.register_type(""), Error);
  EXPECT_THROW(reg.register_type(std::string(200, 'x')), Error);
  const std::string longest(layout::kTypeNameBytes - 1, 'n');  // 95 bytes
  EXPECT_EQ(reg.info(reg.register_type(longest))->name, longest);
  const Error too_long = test::error_of([&] { (void)reg.register_type(longest + "n"); });
  EXPECT_EQ(too_long.code(), Errc::invalid_name);
  EXPECT_NE(std::string(too_long.what()).find("must be 1 to 95 bytes"), std::string::npos) << too_long.what();
}

TEST(SchemaRegistry, ConcurrentRegistrationOfANameGivesOneId) {
  TempSegment seg;
  std::vector<std::thread> threads;
  std::vector<std::uint16_t> ids(8);
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      SchemaRegistry reg(seg.segment());
      for (int i = 0; i < 50; ++i) ids[t] = reg.register_type("Type" + std::to_string(i % 10));
      ids[t] = reg.register_type("Same");
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(std::set<std::uint16_t>(ids.begin(), ids.end()).size(), 1u);
  EXPECT_EQ(SchemaRegistry(seg.segment()).list().size(), 11u);
}

TEST(SchemaRegistry, FullRegistryAndSegmentsWithoutOne) {
  SegmentOptions o = TempSegment::small_options();
  o.registry_slots = 2;
  TempSegment seg(o);
  SchemaRegistry reg(seg.segment());
  reg.register_type("A");
  const std::uint16_t last = reg.register_type("B");
  EXPECT_EQ(last, 2u);
  ASSERT_TRUE(reg.info(last).has_value()) << "the last slot is a type like the others";
  EXPECT_EQ(reg.info(last)->name, "B");
  EXPECT_EQ(reg.list().size(), 2u);
  EXPECT_FALSE(reg.info(3).has_value());
  EXPECT_EQ(reg.register_type("B", 2), last) << "a full registry still finds the type in its last slot";
  EXPECT_EQ(reg.find("B"), last);
  EXPECT_EQ(reg.info(last)->versions_seen, 0b11u);
  try {
    reg.register_type("C");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::no_slot);
    EXPECT_NE(std::string(e.what()).find("the schema registry is full (2 event types)"), std::string::npos) << e.what();
  }
  EXPECT_EQ(reg.try_register_type("C"), std::nullopt);
  EXPECT_EQ(reg.try_register_type("A", 3), 1u);
  EXPECT_EQ(reg.list().size(), 2u);
  o.registry_slots = 0;
  TempSegment none(o);
  EXPECT_THROW(SchemaRegistry{none.segment()}, Error);
}

// An envelope of a type a full registry has no room for is refused with types_full and
// claims nothing; envelopes of the types it holds still publish, in order, after it.
TEST(EnvelopeCodec, AFullRegistryRefusesANewTypeAndKeepsPublishingTheOthers) {
  SegmentOptions o = TempSegment::small_options();
  o.registry_slots = 2;
  TempSegment seg(o);
  SchemaRegistry reg(seg.segment());
  Producer p = Producer::attach(seg.segment());
  Envelope e;
  e.data = "1";
  for (const char* type : {"A", "B", "C", "A"}) {
    e.event_type = type;
    EXPECT_EQ(publish_envelope(p, reg, e), std::string_view(type) == "C" ? Status::types_full : Status::ok) << type;
  }
  EXPECT_EQ(reg.find("C"), std::nullopt);
  TailReader t = TailReader::open(seg.segment(), TailStart::earliest);
  Event ev;
  std::vector<std::string> types;
  while (t.try_next(ev)) types.push_back(reg.info(ev.type())->name);
  EXPECT_EQ(types, (std::vector<std::string>{"A", "B", "A"}));
  EXPECT_EQ(p.next_seq(), 4u) << "the refused envelope took no producer sequence";
}

// Versions start at 1: version 0 is refused before anything is registered or claimed,
// as `ringbus publish` refuses it in a line. A bad type name is refused by name.
TEST(EnvelopeCodec, VersionZeroAndABadTypeNameAreRefusedBeforeAnythingIsClaimed) {
  TempSegment seg;
  SchemaRegistry reg(seg.segment());
  Producer p = Producer::attach(seg.segment());
  Envelope e;
  e.event_type = "Zero";
  e.version = 0;
  e.data = "1";
  EXPECT_EQ(publish_envelope(p, reg, e), Status::invalid);
  EXPECT_EQ(reg.find("Zero"), std::nullopt) << "nothing registered";
  e.event_type = "";
  e.version = 1;
  EXPECT_THROW(
      {
        try {
          (void)publish_envelope(p, reg, e);
        } catch (const Error& err) {
          EXPECT_EQ(err.code(), Errc::invalid_name);
          EXPECT_NE(std::string(err.what()).find("event type \"\" must be 1 to"), std::string::npos) << err.what();
          throw;
        }
      },
      Error);
  EXPECT_EQ(p.next_seq(), 1u) << "no claim";
  EXPECT_EQ(read_stats(seg.segment()).tail, 0u);
}

TEST(Upcasters, ChainOldVersionsUpToTheTarget) {
  Upcasters up;
  up.add("OrderPlaced", 1, [](std::string_view d) { return std::string(R"({"v2":)") + std::string(d) + "}"; });
  up.add("OrderPlaced", 2, [](std::string_view d) { return std::string(R"({"v3":)") + std::string(d) + "}"; });
  auto [data, version] = up.upcast("OrderPlaced", 1, "{}", 3);
  EXPECT_EQ(version, 3u);
  EXPECT_EQ(data, R"({"v3":{"v2":{}}})");
  auto [same, v] = up.upcast("OrderPlaced", 3, "{}", 3);
  EXPECT_EQ(v, 3u);
  EXPECT_EQ(same, "{}");
  auto [partial, pv] = up.upcast("Other", 1, "x", 4);
  EXPECT_EQ(pv, 1u) << "no step: unchanged";
  auto [to2, v2] = up.upcast("OrderPlaced", 1, "{}", 2);
  EXPECT_EQ(v2, 2u) << "not past the target, though a step from it exists";
  EXPECT_EQ(to2, R"({"v2":{}})");
  // A step that could not run is refused when added, not when an event needs it.
  auto refusal = [&](std::uint16_t from, Upcasters::Fn fn) {
    try {
      up.add("OrderPlaced", from, std::move(fn));
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::invalid_options);
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  EXPECT_EQ(refusal(3, nullptr), "upcaster of \"OrderPlaced\" from version 3: no function");
  const auto same_data = [](std::string_view d) { return std::string(d); };
  EXPECT_EQ(refusal(0, same_data),
            "upcaster of \"OrderPlaced\" from version 0: versions are 1 to 65535, and a step goes to the next");
  EXPECT_NE(refusal(65535, same_data).find("from version 65535: versions are 1 to 65535"), std::string::npos);
  EXPECT_EQ(up.upcast("OrderPlaced", 1, "{}", 4).second, 3u) << "nothing refused was added";
}

// The registry is shared memory. A name length beyond the name's bytes is read only up
// to them, and a slot a registrant left half-written (it died before publishing the
// entry) is taken whole by the next registration: no versions or current version of the
// dead one's survive in it.
TEST(SchemaRegistry, DamagedOrHalfWrittenEntriesAreBounded) {
  TempSegment seg;
  SchemaRegistry reg(seg.segment());
  const detail::SegmentRefs& r = seg.segment().refs();
  const std::uint16_t placed = reg.register_type("OrderPlaced");
  r.registry_entry(placed)->name_len = 100'000;
  ASSERT_TRUE(reg.info(placed).has_value());
  EXPECT_EQ(reg.info(placed)->name.size(), layout::kTypeNameBytes);
  EXPECT_EQ(reg.info(placed)->name.substr(0, 11), "OrderPlaced");

  layout::RegistryEntry& half = *r.registry_entry(placed + 1);  // not published
  half.versions.store(0b1111000);
  half.current_version.store(9);
  std::memset(half.name, 'x', layout::kTypeNameBytes);
  const std::uint16_t shipped = reg.register_type("OrderShipped", 2);
  EXPECT_EQ(shipped, placed + 1);
  EXPECT_EQ(reg.info(shipped)->name, "OrderShipped");
  EXPECT_EQ(reg.info(shipped)->versions_seen, 0b10u);
  EXPECT_EQ(reg.info(shipped)->current_version, 0u);
}

TEST(JsonLines, ParseAFullEnvelope) {
  Envelope e;
  const auto err = parse_envelope_json(
      R"({"event_id":"e1","event_type":"OrderPlaced","version":2,"timestamp":"2026-11-22T10:00:00.5Z",)"
      R"("source":"shop","correlation_id":"c1","causation_id":"k0","key":"order-42",)"
      R"("data": {"big": 123456789012345678901234567890, "neg": -1.5e-300, "s": "caf\u00e9 \"quoted\"", "n": null,)"
      R"( "a": [1, {"b": []}], "e": {}}})",
      e);
  ASSERT_FALSE(err.has_value()) << err->field << ": " << err->message;
  EXPECT_EQ(e.event_id, "e1");
  EXPECT_EQ(e.event_type, "OrderPlaced");
  EXPECT_EQ(e.version, 2);
  EXPECT_EQ(e.timestamp_ns, 1795341600'500000000ull);
  EXPECT_EQ(e.key, "order-42");
  EXPECT_EQ(e.data,
            R"({"big":123456789012345678901234567890,"neg":-1.5e-300,"s":"caf\u00e9 \"quoted\"","n":null,)"
            R"("a":[1,{"b":[]}],"e":{}})")
      << "data kept as written, minified";
  Envelope scalar;
  ASSERT_FALSE(parse_envelope_json(R"({"event_type":"T","data":-0.0})", scalar).has_value());
  EXPECT_EQ(scalar.data, "-0.0");
  EXPECT_EQ(scalar.version, 1) << "default version";
}

TEST(JsonLines, ErrorsNameTheFieldAndWhere) {
  struct Case {
    std::string line;
    std::string field;
    std::string message_part;
    std::size_t offset;
  };
  const std::vector<Case> cases = {
      {R"(not json)", "", "not", 0},
      {R"([1,2])", "", "not a JSON object", 0},
      {R"({"event_type":"T","data":1,"evnt":2})", "evnt",
       "is not an envelope field (the fields: event_id, event_type, version, timestamp, source, correlation_id, "
       "causation_id, key, data)",
       34},
      {R"({"event_type":"T","event_type":"U","data":1})", "event_type", "twice", 31},
      {R"({"event_type":7,"data":1})", "event_type", "must be a string", 14},
      {R"({"event_type":"","data":1})", "event_type", "must not be empty", 14},
      {R"({"event_type":"T","version":0,"data":1})", "version", "from 1 to 65535", 28},
      {R"({"event_type":"T","version":"2","data":1})", "version", "from 1 to 65535", 28},
      {R"({"event_type":"T","version":70000,"data":1})", "version", "from 1 to 65535", 28},
      {R"({"event_type":"T","timestamp":"2026-11-22","data":1})", "timestamp", "ISO-8601", 30},
      // Well formed, but no 64-bit nanosecond count holds it, or it is 0 (the header's "none").
      {R"({"event_type":"T","timestamp":"9999-12-31T23:59:59Z","data":1})", "timestamp",
       "must be after 1970-01-01T00:00:00Z and at most 2554-07-21T23:34:33.709551615Z", 30},
      {R"({"event_type":"T","timestamp":"1969-12-31T23:59:59Z","data":1})", "timestamp", "after 1970-01-01", 30},
      {R"({"event_type":"T","timestamp":"1970-01-01T00:00:00Z","data":1})", "timestamp", "after 1970-01-01", 30},
      {R"({"event_type":"T","key":"","data":1})", "key", "must not be empty", 24},
      {R"({"event_type":"T","key":42,"data":1})", "key", "must be a string", 24},
      {R"({"data":1})", "event_type", "required", 0},
      {R"({"event_type":"T"})", "data", "required", 0},
      // A truncated line says so, however far it got and whatever simdjson calls it.
      {R"({"event_type":"T","data":[1,2,)", "", "the JSON object is not closed (truncated line?)", 30},
      {R"({"event_type":"T","data":{"a":1})", "", "the JSON object is not closed (truncated line?)", 32},
      {R"({"event_type":"T","data":{"a":"b)", "", "the JSON object is not closed (truncated line?)", 32},
      {R"({"event_type":"T")", "", "the JSON object is not closed (truncated line?)", 17},
      {R"({"event_type":"T","data":{"a":1}]})", "", "']' does not close the '{' at column 1", 32},
      {R"({"event_type":"T","data":{"a":tru}})", "data", "not valid JSON", 30},
      {R"({"event_type":"T","data":01})", "data", "not valid JSON", 25},
      {R"({"event_type":"T","data":1} extra)", "", "trailing", 28},
      {R"({"event_type":"T","data":1}})", "", "trailing", 27},
      {R"({"event_type":"T" "data":1})", "", "malformed JSON", 18},
      {R"({"event_type":"T","data":1,})", "", "malformed JSON", 27},
      {R"({"event_type":"T",5:1})", "", "malformed JSON", 18},
      {R"({"ev\q":"T","data":1})", "", "malformed field name", 8},
      {R"({"event_type":"T","data":1])", "", "']' does not close the '{' at column 1", 26},
      {R"({"event_type":"T","data":"]"}])", "", "trailing", 29},
      {R"({"event_type":"T","data":"\"]"}])", "", "trailing", 31},
      // A raw control character in a string is named with its offset (simdjson reports
      // one for the whole line: "not JSON" at column 1); raw tabs between tokens are fine.
      {"{\"event_type\":\"T\",\"data\":\"a\tb\"}", "",
       "a string holds a control character (0x09): JSON requires it escaped, as \\u0009", 27},
      {std::string("{\"event_type\":\"T\0\",\"data\":1}", 28), "", "control character (0x00)", 16},
      {"{\"event_type\":\"T\\\x01\",\"data\":1}", "", "control character (0x01)", 17},
      {"{\"event_type\":\"T\",\t\"data\":[1,\"\x1f\"]}", "", "control character (0x1f)", 30},
      // Nesting deeper than 256 levels below `data` is named as such, at the level too deep.
      {R"({"event_type":"T","data":)" + std::string(300, '[') + std::string(300, ']') + "}", "data",
       "nests arrays and objects more than 256 levels deep", 25 + 256},
  };
  for (const Case& c : cases) {
    Envelope e;
    const auto err = parse_envelope_json(c.line, e);
    ASSERT_TRUE(err.has_value()) << c.line;
    EXPECT_EQ(err->field, c.field) << c.line << " -> " << err->message;
    EXPECT_NE(err->message.find(c.message_part), std::string::npos) << c.line << " -> " << err->message;
    if (c.offset != 0) EXPECT_EQ(err->offset, c.offset) << c.line;
  }
  Envelope e;
  // The longest type name fits; one byte more is refused, naming the limit.
  const std::string longest(layout::kTypeNameBytes - 1, 't');
  EXPECT_FALSE(parse_envelope_json(R"({"event_type":")" + longest + R"(","data":1})", e).has_value());
  const auto too_long = parse_envelope_json(R"({"event_type":")" + longest + R"(t","data":1})", e);
  ASSERT_TRUE(too_long.has_value());
  EXPECT_EQ(too_long->field, "event_type");
  EXPECT_EQ(too_long->message, "is longer than " + std::to_string(layout::kTypeNameBytes - 1) + " bytes");
  std::string bad_utf8 = R"({"event_type":"T","data":"x)";
  const std::size_t at = bad_utf8.size();
  bad_utf8 += "\xff\xfe\"}";
  const auto err = parse_envelope_json(bad_utf8, e);
  ASSERT_TRUE(err.has_value());
  EXPECT_EQ(err->message, "invalid UTF-8");
  EXPECT_EQ(err->offset, at);
}

TEST(JsonLines, EventsPrintAsTheirEnvelope) {
  TempSegment seg;
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "g");
  Producer p = Producer::attach(seg.segment());
  SchemaRegistry reg(seg.segment());
  Envelope in;
  ASSERT_FALSE(parse_envelope_json(
                   R"({"event_id":"e1","event_type":"OrderPlaced","version":2,"timestamp":"2026-11-22T10:00:00.5Z",)"
                   R"("key":"order-42","correlation_id":"c","data":{"x":[1,2.50,"\u00e9"]}})",
                   in)
                   .has_value());
  ASSERT_EQ(publish_envelope(p, reg, in), Status::ok);
  const std::string raw = R"({"plain":true})";
  ASSERT_EQ(p.try_publish(0, 77, std::as_bytes(std::span(raw))), Status::ok);
  const std::uint8_t binary[] = {0, 1, 2, 255};
  ASSERT_EQ(p.try_publish(0, 78, std::as_bytes(std::span(binary))), Status::ok);
  std::vector<std::string> lines;
  g.worker(0).poll([&](const Event& e) {
    lines.push_back(event_json(e, &reg));
    if (auto v = envelope_of(e)) {
      EXPECT_EQ(e.key(), key_of("order-42"));
      EXPECT_EQ(e.correlation_id(), key_of("c"));
      EXPECT_EQ(e.schema_version(), 2u);
      EXPECT_EQ(e.timestamp_ns(), 1795341600'500000000ull);
    }
  });
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0],
            R"({"position":0,"key_seq":1,"event_id":"e1","event_type":"OrderPlaced","version":2,)"
            R"("timestamp":"2026-11-22T10:00:00.5Z","correlation_id":"c","key":"order-42","data":{"x":[1,2.50,"\u00e9"]}})");
  EXPECT_NE(lines[1].find(R"("type_id":77)"), std::string::npos);
  EXPECT_NE(lines[1].find(R"("data":{"plain":true})"), std::string::npos);
  EXPECT_NE(lines[2].find(R"("data":"AAEC/w==","data_encoding":"base64")"), std::string::npos) << lines[2];
  for (const std::string& l : lines) EXPECT_TRUE(is_json(l)) << l;
}

// A plain record prints the fields it has and no others: key_seq and key_id only when
// keyed, timestamp only when stamped, correlation only when set.
TEST(JsonLines, APlainRecordPrintsOnlyTheFieldsItHas) {
  TempSegment seg;
  Producer p = Producer::attach(seg.segment(), {.timestamps = Timestamps::none});
  const std::string one = "1";
  ASSERT_EQ(p.try_publish(0, 3, std::as_bytes(std::span(one))), Status::ok);
  Claim c;
  ASSERT_EQ(p.try_claim(5, 3, 1, c), Status::ok);
  c.payload()[0] = std::byte{'2'};
  c.set_correlation_id(77);
  c.set_timestamp_ns(1'500'000'000);
  c.commit();
  TailReader t = TailReader::open(seg.segment(), TailStart::earliest);
  Event ev;
  ASSERT_TRUE(t.try_next(ev));
  EXPECT_EQ(event_json(ev, nullptr), R"({"position":0,"type_id":3,"version":0,"producer_id":)" +
                                         std::to_string(p.id()) + R"(,"producer_seq":1,"data":1})");
  ASSERT_TRUE(t.try_next(ev));
  EXPECT_EQ(event_json(ev, nullptr), R"({"position":)" + std::to_string(ev.position()) +
                                         R"(,"key_seq":1,"type_id":3,"version":0,"timestamp":"1970-01-01T00:00:01.5Z",)"
                                         R"("key_id":5,"producer_id":)" +
                                         std::to_string(p.id()) + R"(,"producer_seq":2,"correlation":77,"data":2})");
}

// Envelope bytes that did not come through publish_envelope (a producer writing its own
// payload and flag, or damaged memory): a line of `tail` must still be JSON, and lose
// nothing, so such a record prints as a plain one with its payload in base64.
TEST(JsonLines, AnEnvelopeThatCannotPrintAsOnePrintsAsAPlainRecord) {
  TempSegment seg;
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "g");
  Producer p = Producer::attach(seg.segment());
  Envelope good;
  good.event_id = "e1";
  good.data = R"({"ok":1})";
  Envelope not_json = good;
  not_json.data = "not json";
  Envelope no_data = good;
  no_data.data = "";
  Envelope bad_utf8 = good;
  bad_utf8.source = "caf\xc3";  // a two-byte sequence cut short
  std::vector<std::vector<std::byte>> payloads;
  for (const Envelope* e : {&good, &not_json, &no_data, &bad_utf8}) {
    std::vector<std::byte> bytes(envelope_payload_size(*e));
    encode_envelope_payload(*e, bytes);
    ASSERT_TRUE(decode_envelope_payload(bytes).has_value());  // well-formed as a payload
    Claim c;
    ASSERT_EQ(p.try_claim(0, 9, static_cast<std::uint32_t>(bytes.size()), c), Status::ok);
    std::memcpy(c.payload().data(), bytes.data(), bytes.size());
    c.set_flags(record_flags::envelope);
    c.commit();
    payloads.push_back(std::move(bytes));
  }
  std::vector<std::string> lines;
  g.worker(0).poll([&](const Event& e) { lines.push_back(event_json(e, nullptr)); });
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_NE(lines[0].find(R"("event_id":"e1")"), std::string::npos) << lines[0];
  EXPECT_NE(lines[0].find(R"("data":{"ok":1})"), std::string::npos) << lines[0];
  for (std::size_t i = 0; i < lines.size(); ++i) {
    EXPECT_TRUE(is_json(lines[i])) << lines[i];
    if (i == 0) continue;
    EXPECT_EQ(lines[i].find("event_id"), std::string::npos) << lines[i];
    EXPECT_NE(lines[i].find(R"("data":")" + base64(payloads[i]) + R"(","data_encoding":"base64")"), std::string::npos)
        << lines[i];
  }
}

TEST(JsonText, JsonStringKeepsUtf8AndReplacesWhatIsNot) {
  EXPECT_EQ(json_string("a\"b\\c\n\x01"), R"("a\"b\\c\n\u0001")");
  EXPECT_EQ(json_string("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"), "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"");
  // A stray continuation byte, a sequence cut short, an overlong form, a surrogate, a
  // byte that never occurs in UTF-8: one U+FFFD a byte.
  EXPECT_EQ(json_string("\x80"), R"("\ufffd")");
  EXPECT_EQ(json_string("x\xe2\x82"), R"("x\ufffd\ufffd")");
  EXPECT_EQ(json_string("\xc0\xaf"), R"("\ufffd\ufffd")");
  EXPECT_EQ(json_string("\xed\xa0\x80"), R"("\ufffd\ufffd\ufffd")");
  EXPECT_EQ(json_string("\xff."), R"("\ufffd.")");
  std::mt19937 rng(5);
  for (int i = 0; i < 5000; ++i) {
    std::string junk(rng() % 24, '\0');
    for (char& c : junk) c = static_cast<char>(rng());
    EXPECT_TRUE(is_json(json_string(junk)));
  }
}

TEST(JsonText, Base64MatchesTheRfc4648Vectors) {
  const std::pair<std::string_view, std::string_view> vectors[] = {
      {"", ""},         {"f", "Zg=="},         {"fo", "Zm8="},        {"foo", "Zm9v"},
      {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"},
  };
  for (const auto& [plain, encoded] : vectors) {
    EXPECT_EQ(base64(std::as_bytes(std::span(plain.data(), plain.size()))), encoded) << plain;
  }
  const std::byte high[] = {std::byte{0xff}, std::byte{0xfe}};
  EXPECT_EQ(base64(high), "//4=");
}

// Arrays and objects nest at most 256 levels below the root value; deeper is refused
// (the check recurses once a level), at the level that is too deep.
TEST(JsonText, IsJsonRefusesNestingDeeperThan256Levels) {
  const auto nested = [](std::size_t levels) { return std::string(levels, '[') + std::string(levels, ']'); };
  EXPECT_TRUE(is_json(nested(257))) << "the root and 256 levels below it";
  std::size_t at = 0;
  EXPECT_FALSE(is_json(nested(258), &at));
  EXPECT_EQ(at, 256u) << "the offset of the deepest array allowed";
  EXPECT_FALSE(is_json("{\"a\":" + nested(257) + "}"));
}

TEST(JsonText, IsJsonAcceptsOneValueAndNothingAfterIt) {
  for (const char* ok : {"0", "-0", "3", " 3 ", "1e400", "123456789012345678901234567890", "-1.5E-300", "\"\"",
                         "\"\\u00e9\"", "true", "null", "[]", "{}", " {\"a\" : [1, {\"b\":null}]} ", "[[[[]]]]"}) {
    EXPECT_TRUE(is_json(ok)) << ok;
    EXPECT_TRUE(is_json(minify_json(ok))) << ok;
  }
  // Found by fuzz_json: a scalar followed by a structural character was accepted.
  for (const char* bad : {"3{}", "3[", "3,", "3:", "3]", "3}", "1 2", "true false", "\"a\"\"b\"", "null,", "01", "1.",
                          ".5", "-", "+1", "1e", "[1,]", "{\"a\":1,}", "{\"a\"}", "[1] 2", "{} {}", "", " ", "nul",
                          "\"\\x\"", "'a'"}) {
    EXPECT_FALSE(is_json(bad)) << bad;
  }
  // Found by fuzz_json: a literal followed by a character that is neither structural nor
  // white space, then trailing white space ("null+  "), was accepted.
  for (const char* bad : {"null+  ", " null+ ", "true+ ", "falsex ", "nullnull", "[null+]", "{\"a\":true-}"}) {
    EXPECT_FALSE(is_json(bad)) << bad;
  }
  for (const char* ok : {" null ", "true\t", " false\n", "[null, true ,false]"}) EXPECT_TRUE(is_json(ok)) << ok;
}

}  // namespace
}  // namespace ringbus
