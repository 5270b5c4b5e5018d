// keel::keyed_bulkhead and keel::rate_limiter under threads (run under TSan):
// the concurrency limit holds, every request ends admitted or refused exactly
// once, nothing stays in use or queued, and a flooded tenant does not take
// another tenant's slots. Checked on counts, never on timings.

#include "keel/resilience/bulkhead.hpp"
#include "keel/resilience/rate_limiter.hpp"

#include <atomic>
#include <iostream>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "../test_env.hpp"

namespace {

keel::bulkhead_config cfg(uint32_t concurrent, uint32_t queued) {
  keel::bulkhead_config c;
  c.name = "db";
  c.max_concurrent = concurrent;
  c.max_queued = queued;
  return c;
}

TEST(BulkheadConcurrency, LimitHoldsAndEveryRequestEndsOnce) {
  const auto seed = keel_test::test_seed();
  std::cout << "KEEL_TEST_SEED=" << seed << "\n";
  const int per_thread = static_cast<int>(4000 / keel_test::test_scale());
  constexpr int threads = 4;
  constexpr uint32_t limit = 3;
  keel::keyed_bulkhead heads{cfg(limit, 16)};
  std::atomic<int> inside{0};
  std::atomic<int> peak{0};
  std::atomic<int> admitted{0};
  std::atomic<int> refused{0};
  // Permits handed to waiters are parked here and released by the workers.
  std::mutex parked_mtx;
  std::vector<keel::permit> parked;

  auto enter = [&] {
    auto now = inside.fetch_add(1) + 1;
    int p = peak.load();
    while (now > p && !peak.compare_exchange_weak(p, now)) {
    }
  };
  auto release_parked = [&] {
    std::vector<keel::permit> mine;
    {
      std::lock_guard<std::mutex> g{parked_mtx};
      mine.swap(parked);
    }
    for (auto& p : mine) {
      inside.fetch_sub(1);
      p.release();
    }
  };

  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&, t] {
      std::mt19937_64 rng{seed + static_cast<uint64_t>(t)};
      for (int i = 0; i < per_thread; ++i) {
        if (rng() % 2 == 0) {
          if (auto p = heads.try_acquire("k")) {
            enter();
            admitted.fetch_add(1);
            inside.fetch_sub(1);
          } else {
            refused.fetch_add(1);
          }
        } else {
          heads.acquire("k", [&](keel::expected<keel::permit> p) {
            if (!p) {
              refused.fetch_add(1);
              return;
            }
            enter();
            admitted.fetch_add(1);
            std::lock_guard<std::mutex> g{parked_mtx};
            parked.push_back(std::move(*p));
          });
        }
        if (rng() % 4 == 0)
          release_parked();
      }
    });
  for (auto& t : ts)
    t.join();
  // Waiters still queued are admitted as parked permits are released.
  for (int i = 0; i < 100 && heads.stats("k").in_use > 0; ++i)
    release_parked();
  auto s = heads.stats("k");
  EXPECT_LE(peak.load(), static_cast<int>(limit));
  EXPECT_EQ(s.in_use, 0u);
  EXPECT_EQ(s.queued, 0u);
  EXPECT_EQ(admitted.load() + refused.load(), threads * per_thread);
  EXPECT_EQ(s.admitted, static_cast<uint64_t>(admitted.load()));
  EXPECT_EQ(s.rejected, static_cast<uint64_t>(refused.load()));
}

TEST(BulkheadConcurrency, AFloodedTenantDoesNotStarveAnother) {
  const int n = static_cast<int>(5000 / keel_test::test_scale());
  keel::keyed_bulkhead heads{cfg(2, 4)};
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> a_refused{0};
  std::vector<std::thread> flood;
  for (int t = 0; t < 3; ++t)
    flood.emplace_back([&] {
      while (!stop.load()) {
        auto p = heads.try_acquire("A");
        if (!p)
          a_refused.fetch_add(1);
      }
    });
  // Tenant B: two threads, never more than its limit of 2 at once.
  std::atomic<int> b_ok{0};
  std::vector<std::thread> bs;
  for (int t = 0; t < 2; ++t)
    bs.emplace_back([&] {
      for (int i = 0; i < n; ++i)
        if (heads.try_acquire("B"))
          b_ok.fetch_add(1);
    });
  for (auto& t : bs)
    t.join();
  stop.store(true);
  for (auto& t : flood)
    t.join();
  EXPECT_EQ(b_ok.load(), 2 * n) << "every request of B admitted while A was flooded";
  EXPECT_EQ(heads.stats("B").rejected, 0u);
  EXPECT_EQ(heads.stats("A").rejected, a_refused.load());
}

TEST(RateLimiterConcurrency, NeverGrantsMoreThanTheBurstWithoutRefill) {
  // The clock stands still: exactly `burst` tokens per key exist.
  auto t0 = std::chrono::steady_clock::now();
  keel::rate_limiter_config c;
  c.rate = 1;
  c.burst = 500;
  keel::rate_limiter rl{c, [t0] { return t0; }};
  std::atomic<int> granted{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&, t] {
      for (int i = 0; i < 400; ++i) {
        if (rl.try_acquire("shared"))
          granted.fetch_add(1);
        (void)rl.try_acquire("own-" + std::to_string(t));
      }
    });
  for (auto& t : ts)
    t.join();
  EXPECT_EQ(granted.load(), 500);
  auto s = rl.stats();
  EXPECT_EQ(s.admitted, 500u + 4 * 400u);
  EXPECT_EQ(s.rejected, 1600u - 500u);
}

} // namespace
