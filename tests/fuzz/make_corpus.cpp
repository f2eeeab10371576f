// Writes the seed corpus of the fuzz targets: segment images in several states
// (attach) and log contents of published records (decode).
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "fuzz_common.hpp"
#include "ringbus/envelope.hpp"

namespace {

void save(const std::string& path, const void* data, std::size_t n) {
  std::ofstream out(path, std::ios::binary);
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(n));
}

std::vector<char> file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s ATTACH_DIR DECODE_DIR JSON_DIR\n", argv[0]);
    return 2;
  }
  const std::string attach = argv[1], decode = argv[2], json = argv[3];
  // JSON seeds: the first byte picks the mode of fuzz_json (0 line, 1 payload, 2 value).
  const char* lines[] = {
      R"({"event_id":"e-1","event_type":"order.created","version":2,"timestamp":"2026-11-22T10:00:00.123+01:00",)"
      R"("source":"shop","correlation_id":"c","causation_id":"d","key":"order-1","data":{"a":[1,-2.5e10,"x\u00e9"]}})",
      R"({"event_type":"t","key":"k","data":"s\"\\\n\ud83d\ude00"})",
      R"({"event_type":"t","data":18446744073709551616})",
      R"({"event_type":"t","data":{"nested":{"deep":[[[]]],"e":{}}},"key":"k"})",
  };
  int n = 0;
  for (const char* l : lines) {
    for (char mode : {'\0', '\2'}) {
      std::string input(1, mode);
      input += l;
      save(json + "/seed-" + std::to_string(n++), input.data(), input.size());
    }
    ringbus::Envelope e;
    e.event_type = "t";
    e.key = "order-1";
    e.source = "shop";
    e.data = l;
    std::string input(1, '\1');
    input.resize(1 + ringbus::envelope_payload_size(e));
    ringbus::encode_envelope_payload(e, std::as_writable_bytes(std::span(input.data() + 1, input.size() - 1)));
    save(json + "/seed-" + std::to_string(n++), input.data(), input.size());
  }
  const std::string scratch = "/dev/shm/ringbus-fuzz-seed-" + std::to_string(::getpid());
  using namespace ringbus;
  for (int variant = 0; variant < 4; ++variant) {
    {
      SegmentOptions o = fuzz::seed_options();
      o.if_exists = SegmentOptions::IfExists::replace;
      if (variant == 3) {
        o.dedup_window = 0;
        o.dlq_capacity = 0;
      }
      const Segment seg = Segment::create(Location::file(scratch), o);
      if (variant >= 1) {
        GroupOptions go;
        go.workers = 2;
        go.dedup = variant != 3;
        go.retry.max_attempts = 1;
        ConsumerGroup g = ConsumerGroup::join(seg, "seed", go);
        Producer p = Producer::attach(seg, {.producer_id = 5});
        // A few events fail (dead letters in the image); not so many that the small
        // dead-letter ring fills and holds the group.
        int failures = variant == 3 ? 2 : 0;  // variant 3 has no dead-letter ring
        auto consume = [&] {
          for (std::uint32_t w = 0; w < 2; ++w) {
            g.worker(w).poll([&](const Event& e) { return e.key() == 3 && failures++ < 2 ? Handled::fail : Handled::ok; },
                             100);
          }
        };
        for (std::uint64_t i = 0; i < (variant == 2 ? 900u : 40u); ++i) {
          std::string payload(8 + i % 100, static_cast<char>('a' + i % 26));
          // The group gates the ring: consume whenever it is full.
          while (p.try_publish(i % 5, static_cast<std::uint16_t>(i % 3), std::as_bytes(std::span(payload))) ==
                 Status::full) {
            consume();
          }
          if (i % 7 == 0) {
            Claim c;
            if (p.try_claim(i % 5, 1, 16, c) == Status::ok) c.abort();
          }
        }
        if (variant == 1) {  // envelope events, as `ringbus publish` writes them
          SchemaRegistry registry(seg);
          for (int i = 0; i < 3; ++i) {
            Envelope e;
            e.event_type = i == 2 ? "order.paid" : "order.created";
            e.key = "order-" + std::to_string(i);
            e.event_id = "e-" + std::to_string(i);
            e.data = R"({"qty":3,"name":"caf\u00e9"})";
            (void)publish_envelope(p, registry, e, std::chrono::milliseconds(0));
          }
        }
        consume();
        // Worker 0 as a process that died handling an event after a deferred retry
        // leaves it: a redelivery window and a death count for the join to read.
        TailReader oldest = TailReader::open(seg, TailStart::earliest);
        if (Event first; oldest.try_next(first)) {
          layout::WorkerSlot& ws = seg.refs().groups[read_stats(seg).groups.at(0).slot].worker[0];
          ws.cursor.store(first.position());
          ws.inflight.store(first.position() | 1);
          ws.redeliver_until.store(seg.was_tail());
        }
        if (variant == 2) {
          const auto* base = reinterpret_cast<const char*>(seg.refs().log);
          std::vector<char> log(base, base + seg.capacity());
          std::uint64_t header[2] = {seg.was_tail(), 0};
          std::vector<char> input(reinterpret_cast<char*>(header), reinterpret_cast<char*>(header) + 16);
          input.insert(input.end(), log.begin(), log.end());
          save(decode + "/wrapped", input.data(), input.size());
        }
        if (variant == 1) {
          const auto* base = reinterpret_cast<const char*>(seg.refs().log);
          std::vector<char> log(base, base + 8192);
          std::uint64_t header[2] = {seg.was_tail(), 0};
          std::vector<char> input(reinterpret_cast<char*>(header), reinterpret_cast<char*>(header) + 16);
          input.insert(input.end(), log.begin(), log.end());
          save(decode + "/records", input.data(), input.size());
        }
      }
    }
    const std::vector<char> image = file_bytes(scratch);
    save(attach + "/segment-" + std::to_string(variant), image.data(), image.size());
  }
  ::unlink(scratch.c_str());
  const char empty[16] = {};
  save(decode + "/empty", empty, sizeof empty);
  return 0;
}
