// A zero-copy view of one event in the log, as a handler sees it. Valid only during
// the handler call: once the handler returns, the worker's cursor moves past it and
// producers may reuse its bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "ringbus/record.hpp"

namespace ringbus {

class Event {
 public:
  Event() = default;
  Event(const RecordHeader* h, std::uint64_t position, std::uint32_t payload_len) noexcept
      : h_(h), position_(position), len_(payload_len) {}

  // Global position in the log (byte offset since creation; strictly increasing).
  [[nodiscard]] std::uint64_t position() const noexcept { return position_; }
  [[nodiscard]] std::uint64_t key() const noexcept { return h_->key; }
  // 1, 2, 3, ... per key in log order; 0 for unkeyed events.
  [[nodiscard]] std::uint64_t key_seq() const noexcept { return key_seq_of(h_->key_seq_flags); }
  [[nodiscard]] std::uint16_t flags() const noexcept { return flags_of(h_->key_seq_flags); }
  [[nodiscard]] std::uint32_t producer_id() const noexcept { return h_->producer_id; }
  [[nodiscard]] std::uint64_t producer_seq() const noexcept { return h_->producer_seq; }
  [[nodiscard]] std::uint16_t type() const noexcept { return h_->type_id; }
  [[nodiscard]] std::uint16_t schema_version() const noexcept { return h_->schema_version; }
  [[nodiscard]] std::uint64_t timestamp_ns() const noexcept { return h_->timestamp_ns; }
  [[nodiscard]] std::uint64_t correlation_id() const noexcept { return h_->correlation_id; }
  [[nodiscard]] std::span<const std::byte> payload() const noexcept {
    return {reinterpret_cast<const std::byte*>(h_) + kRecordHeaderSize, len_};
  }
  [[nodiscard]] const RecordHeader& header() const noexcept { return *h_; }

  // Delivered again after the process handling it died: the handler may have seen it
  // before (at-least-once). With dedup on, only such events can reach a handler twice.
  [[nodiscard]] bool redelivered() const noexcept { return (marks_ & kRedelivered) != 0; }
  // Delivered from the group's dead-letter ring (ringbus dlq redrive).
  [[nodiscard]] bool redriven() const noexcept { return (marks_ & kRedriven) != 0; }
  // A void record (GroupOptions::deliver_voids): its key_seq was used but the event was
  // lost (aborted after a later claim of its key, or reclaimed from a dead producer).
  [[nodiscard]] bool is_void() const noexcept { return (marks_ & kVoid) != 0; }

  static constexpr std::uint8_t kRedelivered = 1;
  static constexpr std::uint8_t kRedriven = 2;
  static constexpr std::uint8_t kVoid = 4;
  // Set by the worker that delivers the event.
  void mark(std::uint8_t m) noexcept { marks_ = static_cast<std::uint8_t>(marks_ | m); }

 private:
  const RecordHeader* h_ = nullptr;
  std::uint64_t position_ = 0;
  std::uint32_t len_ = 0;
  std::uint8_t marks_ = 0;
};

}  // namespace ringbus
