// Sliding-window duplicate detection over a stream of sequence numbers, in the style of
// RFC 6479 (the anti-replay window of IPsec and WireGuard): a ring of 64-bit words, one
// bit per sequence number (bit = seq mod ring bits). Test-and-set is O(1); moving the
// window forward zeroes only the words it skips; nothing is ever shifted.
//
// The window covers the `window()` sequence numbers up to the highest one seen. One word
// of the ring is slack, so that advancing never clears bits still inside the window.
//
// Usable for any sequence: a producer's producer_seq (consumer groups do that, with the
// words in the segment), a key's key_seq, an external partition's offsets.
#pragma once

#include <atomic>
#include <bit>
#include <cstdint>
#include <memory>

namespace ringbus {

enum class Seen : std::uint8_t {
  fresh,      // not seen before; now marked
  duplicate,  // already marked
  too_old,    // below the window: cannot tell, treated as a duplicate
};

// Words a window of at least `bits` sequence numbers needs: a power of two, >= 2.
constexpr std::uint32_t dedup_words_for(std::uint32_t bits) noexcept {
  return std::bit_ceil((bits + 63) / 64 + 1);
}

// Sequence numbers a window of `words` words remembers below the highest one seen: one
// word is slack, so the window slides a word at a time without forgetting any of them.
constexpr std::uint64_t dedup_window_of(std::uint64_t words) noexcept { return (words - 1) * 64; }
static_assert(dedup_window_of(dedup_words_for(1024)) >= 1024 && dedup_window_of(dedup_words_for(64)) >= 64);

// The largest window a segment holds (SegmentOptions::dedup_window), and the most windows
// a group worker keeps (SegmentOptions::dedup_producers).
inline constexpr std::uint32_t kMaxDedupWords = 1u << 16;
inline constexpr std::uint32_t kMaxDedupWindow = (kMaxDedupWords - 1) * 64;
inline constexpr std::uint32_t kMaxDedupProducers = 4096;
static_assert(dedup_words_for(kMaxDedupWindow) == kMaxDedupWords && dedup_words_for(kMaxDedupWindow + 1) > kMaxDedupWords);

// A view of a window whose state lives elsewhere (`top` and `words[nwords]`, nwords a
// power of two). One writer at a time; other threads or processes may read (relaxed).
class DedupWindow {
 public:
  DedupWindow(std::atomic<std::uint64_t>* top, std::atomic<std::uint64_t>* words, std::uint32_t nwords) noexcept
      : top_(top), words_(words), mask_(nwords - 1) {}

  // Sequence numbers the window remembers below the highest one seen.
  [[nodiscard]] std::uint64_t window() const noexcept { return dedup_window_of(mask_ + 1); }
  // The highest sequence number marked (0 if none).
  [[nodiscard]] std::uint64_t top() const noexcept { return top_->load(std::memory_order_relaxed); }

  // Marks `seq` and says whether it had been seen. seq 0 is reserved (never fresh).
  Seen check_and_set(std::uint64_t seq) noexcept {
    const Seen s = check(seq);
    if (s == Seen::fresh) set(seq);
    return s;
  }

  // Says whether `seq` has been seen, without marking it.
  [[nodiscard]] Seen check(std::uint64_t seq) const noexcept {
    const std::uint64_t top = top_->load(std::memory_order_relaxed);
    if (seq == 0) return Seen::too_old;
    if (seq > top) return Seen::fresh;
    if (top - seq >= window()) return Seen::too_old;
    const std::uint64_t w = words_[(seq >> 6) & mask_].load(std::memory_order_relaxed);
    return (w >> (seq & 63)) & 1 ? Seen::duplicate : Seen::fresh;
  }

  // Marks `seq` (moving the window forward if it is above the top).
  void set(std::uint64_t seq) noexcept {
    std::uint64_t top = top_->load(std::memory_order_relaxed);
    if (seq > top) {
      // Zero the words between the old top's word and seq's word (all of them if the
      // jump is larger than the ring).
      const std::uint64_t from = top >> 6;
      const std::uint64_t to = seq >> 6;
      const std::uint64_t n = to - from > mask_ + 1 ? mask_ + 1 : to - from;
      for (std::uint64_t i = 1; i <= n; ++i) words_[(from + i) & mask_].store(0, std::memory_order_relaxed);
      top_->store(seq, std::memory_order_relaxed);
      top = seq;
    } else if (top - seq >= window()) {
      return;
    }
    std::atomic<std::uint64_t>& w = words_[(seq >> 6) & mask_];
    w.store(w.load(std::memory_order_relaxed) | (std::uint64_t{1} << (seq & 63)), std::memory_order_relaxed);
  }

  void reset() noexcept {
    top_->store(0, std::memory_order_relaxed);
    for (std::uint64_t i = 0; i <= mask_; ++i) words_[i].store(0, std::memory_order_relaxed);
  }

  // Marks everything `other` has marked (both windows move to the higher top).
  void merge(const DedupWindow& other) noexcept {
    const std::uint64_t otop = other.top();
    if (otop == 0) return;
    const std::uint64_t low = otop > other.window() ? otop - other.window() + 1 : 1;
    for (std::uint64_t s = low; s <= otop; ++s) {
      if (other.check(s) == Seen::duplicate) set(s);
    }
  }

 private:
  std::atomic<std::uint64_t>* top_;
  std::atomic<std::uint64_t>* words_;
  std::uint64_t mask_;
};

// A window that owns its words (heap), e.g. for an adapter's partition offsets.
class OwnedDedupWindow {
 public:
  explicit OwnedDedupWindow(std::uint32_t bits = 1024)
      : nwords_(dedup_words_for(bits)), words_(new std::atomic<std::uint64_t>[nwords_]()), view_(&top_, words_.get(), nwords_) {}
  DedupWindow& operator*() noexcept { return view_; }
  DedupWindow* operator->() noexcept { return &view_; }

 private:
  std::uint32_t nwords_;
  std::atomic<std::uint64_t> top_{0};
  std::unique_ptr<std::atomic<std::uint64_t>[]> words_;
  DedupWindow view_;
};

}  // namespace ringbus
