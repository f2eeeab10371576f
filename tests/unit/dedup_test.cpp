// The sliding-window duplicate detector, against a reference model.
#include <gtest/gtest.h>

#include <random>
#include <set>

#include "ringbus/dedup.hpp"

namespace ringbus {
namespace {

TEST(DedupWindow, FreshDuplicateAndTooOld) {
  OwnedDedupWindow w(1024);
  EXPECT_GE(w->window(), 1024u);
  EXPECT_EQ(w->check_and_set(5), Seen::fresh);
  EXPECT_EQ(w->check_and_set(5), Seen::duplicate);
  EXPECT_EQ(w->check_and_set(3), Seen::fresh) << "out of order, inside the window";
  EXPECT_EQ(w->check_and_set(3), Seen::duplicate);
  EXPECT_EQ(w->top(), 5u);
  EXPECT_EQ(w->check_and_set(5 + w->window()), Seen::fresh);
  EXPECT_EQ(w->check_and_set(5), Seen::too_old) << "exactly one window below the top";
  EXPECT_EQ(w->check_and_set(6), Seen::fresh) << "just inside";
  EXPECT_EQ(w->check_and_set(0), Seen::too_old) << "0 is never a sequence number";
}

TEST(DedupWindow, AdvancingClearsOnlyTheWordsItSkips) {
  OwnedDedupWindow w(256);
  const std::uint64_t win = w->window();
  for (std::uint64_t s = 1; s <= 100; ++s) EXPECT_EQ(w->check_and_set(s), Seen::fresh);
  // Jump by less than a window: the old marks still inside it stay marked.
  EXPECT_EQ(w->check_and_set(100 + win / 2), Seen::fresh);
  for (std::uint64_t s = 100 + win / 2 - win + 1; s <= 100; ++s) {
    if (s >= 1) EXPECT_EQ(w->check(s), Seen::duplicate) << s;
  }
  // A jump far beyond the ring: nothing old survives as a false duplicate.
  const std::uint64_t far = 1'000'000;
  EXPECT_EQ(w->check_and_set(far), Seen::fresh);
  for (std::uint64_t s = far - win + 1; s < far; ++s) EXPECT_EQ(w->check(s), Seen::fresh) << s;
}

TEST(DedupWindow, MatchesAReferenceModelOnRandomStreams) {
  std::mt19937_64 rng(2024);
  for (int round = 0; round < 20; ++round) {
    OwnedDedupWindow w(128 * (1 + round % 4));
    const std::uint64_t win = w->window();
    std::set<std::uint64_t> seen;
    std::uint64_t top = 0;
    for (int i = 0; i < 20'000; ++i) {
      // Mostly forward, sometimes a replay of something recent or ancient, sometimes a jump.
      std::uint64_t seq;
      const auto dice = rng() % 100;
      if (dice < 70 || top == 0) {
        seq = top + 1 + rng() % 3;
      } else if (dice < 90) {
        seq = top - std::min<std::uint64_t>(top - 1, rng() % (win + 50));
      } else if (dice < 98) {
        seq = 1 + rng() % top;
      } else {
        seq = top + 1 + rng() % (4 * win);
      }
      Seen expect;
      if (seq > top) {
        expect = Seen::fresh;
      } else if (top - seq >= win) {
        expect = Seen::too_old;
      } else {
        expect = seen.count(seq) ? Seen::duplicate : Seen::fresh;
      }
      ASSERT_EQ(w->check_and_set(seq), expect) << "round " << round << " step " << i << " seq " << seq << " top " << top;
      if (expect == Seen::fresh) {
        seen.insert(seq);
        top = std::max(top, seq);
      }
    }
  }
}

// set() is public (an adapter marks what it accepted): marking a number below the window
// changes nothing, where its bit would stand for a number inside it. reset() empties
// every word, the last one too. 0 is never fresh, also in a new window.
TEST(DedupWindow, SetBelowTheWindowAndResetLeaveNoFalseDuplicates) {
  OwnedDedupWindow w(256);
  const std::uint64_t win = w->window();
  EXPECT_EQ(w->check(0), Seen::too_old);
  const std::uint64_t top = 3 * win;
  w->set(top);
  // The ring holds win + 64 bits: top - win - 64 - 5 has the bit of top - 5.
  w->set(top - win - 64 - 5);
  EXPECT_EQ(w->check(top - 5), Seen::fresh);
  EXPECT_EQ(w->check(top), Seen::duplicate);
  for (std::uint64_t s = 1; s <= win + 64; ++s) w->set(s);
  w->reset();
  EXPECT_EQ(w->top(), 0u);
  for (std::uint64_t s = 1; s <= win + 64; ++s) ASSERT_EQ(w->check(s), Seen::fresh) << s;
}

TEST(DedupWindow, MergeMarksTheUnion) {
  OwnedDedupWindow a(256), b(256), u(256);
  for (std::uint64_t s : {1, 4, 9, 200}) a->set(s);
  for (std::uint64_t s : {2, 4, 250}) b->set(s);
  u->merge(*a);
  u->merge(*b);
  for (std::uint64_t s : {1, 2, 4, 9, 200, 250}) EXPECT_EQ(u->check(s), Seen::duplicate) << s;
  for (std::uint64_t s : {3, 5, 199, 249}) EXPECT_EQ(u->check(s), Seen::fresh) << s;
  EXPECT_EQ(u->top(), 250u);
}

}  // namespace
}  // namespace ringbus
