// A log-linear latency histogram: exact below 128, then 128 linear sub-buckets per
// power of two (relative error under 0.8%). Recording is a few instructions and never
// allocates; percentiles are read after the run.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>

namespace ringbus::bench {

class Histogram {
 public:
  static constexpr unsigned kSubBits = 7;
  static constexpr std::size_t kSub = std::size_t{1} << kSubBits;
  static constexpr std::size_t kBuckets = (64 - kSubBits + 1) * kSub;

  void record(std::uint64_t v) noexcept {
    ++counts_[index(v)];
    ++count_;
    max_ = std::max(max_, v);
    min_ = std::min(min_, v);
  }
  void merge(const Histogram& o) noexcept {
    for (std::size_t i = 0; i < kBuckets; ++i) counts_[i] += o.counts_[i];
    count_ += o.count_;
    max_ = std::max(max_, o.max_);
    min_ = std::min(min_, o.min_);
  }
  void reset() noexcept { *this = Histogram{}; }

  [[nodiscard]] std::uint64_t count() const noexcept { return count_; }
  [[nodiscard]] std::uint64_t max() const noexcept { return count_ ? max_ : 0; }
  [[nodiscard]] std::uint64_t min() const noexcept { return count_ ? min_ : 0; }

  // The value at percentile p (0..100]: the upper edge of the bucket holding it.
  [[nodiscard]] std::uint64_t percentile(double p) const noexcept {
    if (count_ == 0) return 0;
    const auto rank = static_cast<std::uint64_t>(static_cast<double>(count_) * p / 100.0 + 0.5);
    const std::uint64_t target = std::clamp<std::uint64_t>(rank, 1, count_);
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < kBuckets; ++i) {
      seen += counts_[i];
      if (seen >= target) return std::min(upper(i), max_);
    }
    return max_;
  }

  // How many values lie above v, counting the buckets wholly above it: exact below
  // 128, else short by at most the values of v's own bucket (under 0.8% wide).
  [[nodiscard]] std::uint64_t count_above(std::uint64_t v) const noexcept {
    std::uint64_t n = 0;
    for (std::size_t i = index(v) + 1; i < kBuckets; ++i) n += counts_[i];
    return n;
  }

  // v in [2^e, 2^(e+1)), e >= kSubBits: 128 buckets of width 2^(e - kSubBits).
  static constexpr std::size_t index(std::uint64_t v) noexcept {
    if (v < kSub) return static_cast<std::size_t>(v);
    const unsigned e = 63u - static_cast<unsigned>(__builtin_clzll(v));
    const unsigned shift = e - kSubBits;
    return (shift + 1) * kSub + static_cast<std::size_t>((v >> shift) - kSub);
  }
  static constexpr std::uint64_t lower(std::size_t i) noexcept {
    if (i < kSub) return i;
    const std::size_t shift = i / kSub - 1;
    return (std::uint64_t{kSub} + (i % kSub)) << shift;
  }
  static constexpr std::uint64_t upper(std::size_t i) noexcept {
    if (i < kSub) return i;
    return lower(i) + (std::uint64_t{1} << (i / kSub - 1)) - 1;
  }

 private:
  std::array<std::uint64_t, kBuckets> counts_{};
  std::uint64_t count_ = 0;
  std::uint64_t max_ = 0;
  std::uint64_t min_ = ~std::uint64_t{0};
};

}  // namespace ringbus::bench
