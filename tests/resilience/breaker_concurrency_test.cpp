// keel::circuit_breaker under threads (also run under TSan): every state is
// visited while threads hammer try_acquire and record; half-open never has
// more trial calls in flight than permitted; lost outcomes never leave it
// stuck half-open; counters and the event chain stay consistent. Seeded
// (KEEL_TEST_SEED replays a run) and scaled by KEEL_TEST_SCALE.

#include "keel/resilience/breaker.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "../test_env.hpp"

namespace {

using keel::breaker_state;
using namespace std::chrono_literals;

/// A clock the threads move forward together (ticks are nanoseconds).
struct shared_clock {
  std::shared_ptr<std::atomic<int64_t>> ticks = std::make_shared<std::atomic<int64_t>>(1);

  keel::breaker_clock fn() const {
    return [t = ticks] {
      return std::chrono::steady_clock::time_point{std::chrono::nanoseconds{t->load()}};
    };
  }

  void advance(int64_t n) const { ticks->fetch_add(n); }
};

uint64_t seed_and_print() {
  auto seed = keel_test::test_seed();
  std::printf("KEEL_TEST_SEED=%llu KEEL_TEST_SCALE=%zu\n", static_cast<unsigned long long>(seed),
              keel_test::test_scale());
  return seed;
}

keel::breaker_config racy_config(const shared_clock& clock) {
  keel::breaker_config cfg;
  cfg.name = "racy";
  cfg.window_size = 20;
  cfg.minimum_calls = 10;
  cfg.failure_rate_threshold = 50;
  cfg.slow_call_duration = 1s;
  cfg.open_duration = std::chrono::nanoseconds{200};
  cfg.permitted_calls_in_half_open = 3;
  cfg.clock = clock.fn();
  return cfg;
}

/// Checks that the events, ordered by sequence number, form one chain.
void expect_event_chain(std::vector<keel::state_change> events) {
  std::sort(events.begin(), events.end(),
            [](const auto& x, const auto& y) { return x.sequence < y.sequence; });
  for (size_t i = 0; i < events.size(); ++i) {
    ASSERT_EQ(events[i].sequence, i + 1);
    ASSERT_NE(events[i].from, events[i].to);
    if (i > 0) {
      ASSERT_EQ(events[i].from, events[i - 1].to) << "event " << i + 1;
    }
  }
}

TEST(BreakerConcurrency, HalfOpenNeverAdmitsMoreThanPermitted) {
  auto seed = seed_and_print();
  shared_clock clock;
  auto cfg = racy_config(clock);
  cfg.max_wait_in_half_open = std::chrono::hours{1}; // rounds end only by their outcomes
  keel::circuit_breaker b{cfg};
  std::mutex events_mtx;
  std::vector<keel::state_change> events;
  b.on_state_change([&](const keel::state_change& e) {
    std::lock_guard lk{events_mtx};
    events.push_back(e);
  });

  const size_t threads = 4;
  const size_t iterations = 200'000 / keel_test::test_scale();
  std::atomic<int> trials_in_flight{0};
  std::atomic<int> max_trials{0};
  std::atomic<uint64_t> refused{0};
  std::atomic<uint64_t> trial_calls{0};
  std::vector<std::thread> pool;
  for (size_t t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      std::mt19937_64 rng{seed + t};
      std::uniform_int_distribution<int> pct{0, 99};
      for (size_t i = 0; i < iterations; ++i) {
        if (pct(rng) < 10)
          clock.advance(10);
        auto p = b.try_acquire();
        if (!p) {
          ++refused;
          continue;
        }
        bool trial = p->admitted_in() == breaker_state::half_open;
        if (trial) {
          ++trial_calls;
          auto n = ++trials_in_flight;
          auto seen = max_trials.load();
          while (n > seen && !max_trials.compare_exchange_weak(seen, n)) {
          }
          if (pct(rng) < 20)
            std::this_thread::yield(); // widen the race window
        }
        // The outcome: the failure share swings so every state is visited.
        int failure_pct = (i / 2000) % 2 == 0 ? 70 : 10;
        int roll = pct(rng);
        if (trial)
          --trials_in_flight; // before the outcome lets a new round begin
        if (roll < 5)
          p->release();
        else if (roll < failure_pct)
          p->record_failure(keel::unavailable_error("down"), 1ms);
        else
          p->record_success(1ms);
      }
    });
  }
  for (auto& th : pool)
    th.join();

  EXPECT_LE(max_trials.load(), 3) << "more trial calls in flight than permitted";
  EXPECT_GT(trial_calls.load(), 0u) << "half-open was never reached";
  auto m = b.metrics();
  EXPECT_EQ(m.not_permitted_calls, refused.load());
  EXPECT_EQ(m.trial_calls_in_flight, 0u);
  std::lock_guard lk{events_mtx};
  EXPECT_EQ(m.transitions, events.size());
  expect_event_chain(events);
  bool closed_again = std::any_of(events.begin(), events.end(), [](const auto& e) {
    return e.reason == keel::transition_reason::trial_calls_passed;
  });
  EXPECT_TRUE(closed_again) << "no half-open round ever passed";
  std::printf("transitions=%zu trial calls=%llu refused=%llu\n", events.size(),
              static_cast<unsigned long long>(trial_calls.load()),
              static_cast<unsigned long long>(refused.load()));
}

TEST(BreakerConcurrency, LostOutcomesNeverLeaveItStuckHalfOpen) {
  auto seed = seed_and_print();
  shared_clock clock;
  auto cfg = racy_config(clock);
  cfg.max_wait_in_half_open = std::chrono::nanoseconds{500};
  keel::circuit_breaker b{cfg};
  std::atomic<uint64_t> refused{0};
  std::mutex lost_mtx;
  std::vector<keel::breaker_permit> lost; // outcomes that never arrive
  const size_t threads = 4;
  const size_t iterations = 100'000 / keel_test::test_scale();
  std::atomic<uint32_t> max_in_flight{0};
  std::vector<std::thread> pool;
  for (size_t t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      std::mt19937_64 rng{seed * 31 + t};
      std::uniform_int_distribution<int> pct{0, 99};
      for (size_t i = 0; i < iterations; ++i) {
        if (pct(rng) < 20)
          clock.advance(25);
        auto p = b.try_acquire();
        if (!p) {
          ++refused;
          continue;
        }
        int roll = pct(rng);
        if (p->admitted_in() == breaker_state::half_open && roll < 30) {
          std::lock_guard lk{lost_mtx};
          lost.push_back(std::move(*p));
        } else if (roll < 60) {
          p->record_failure(keel::deadline_exceeded_error("slow"), 1ms);
        } else {
          p->record_success(1ms);
        }
        if (i % 64 == 0) {
          auto n = b.metrics().trial_calls_in_flight;
          auto seen = max_in_flight.load();
          while (n > seen && !max_in_flight.compare_exchange_weak(seen, n)) {
          }
        }
        if (i % 5000 == 0 && pct(rng) < 50) {
          // An operator steps in now and then.
          if (pct(rng) < 50)
            b.force_open();
          b.reset();
        }
      }
    });
  }
  for (auto& th : pool)
    th.join();
  EXPECT_LE(max_in_flight.load(), 3u);
  EXPECT_EQ(b.metrics().not_permitted_calls, refused.load());

  // Whatever state the run ended in, with the lost permits still held, time
  // alone brings the breaker back to admitting trial calls.
  b.force_open();
  b.reset();
  while (b.state() == breaker_state::closed) {
    auto p = b.try_acquire();
    ASSERT_TRUE(p.has_value());
    p->record_failure(keel::unavailable_error("down"), 1ms);
  }
  ASSERT_EQ(b.state(), breaker_state::open);
  clock.advance(200);
  std::vector<keel::breaker_permit> stuck;
  for (int i = 0; i < 3; ++i) {
    auto p = b.try_acquire();
    ASSERT_TRUE(p.has_value());
    stuck.push_back(std::move(*p));
  }
  EXPECT_FALSE(b.try_acquire().has_value());
  EXPECT_EQ(b.state(), breaker_state::half_open);
  clock.advance(500);
  EXPECT_FALSE(b.try_acquire().has_value());
  EXPECT_EQ(b.state(), breaker_state::open) << "max wait in half-open ends the round";
  clock.advance(200);
  EXPECT_TRUE(b.try_acquire().has_value());
  std::lock_guard lk{lost_mtx};
  std::printf("lost outcomes=%zu refused=%llu\n", lost.size(),
              static_cast<unsigned long long>(refused.load()));
}

TEST(BreakerConcurrency, ClosedHotPathKeepsExactCounts) {
  auto seed = seed_and_print();
  keel::breaker_config cfg;
  cfg.name = "hot";
  cfg.window_size = 1000;
  cfg.minimum_calls = 1000;
  cfg.failure_rate_threshold = 50;
  keel::circuit_breaker b{cfg};
  const size_t threads = 4;
  const size_t iterations = 100'000 / keel_test::test_scale();
  std::atomic<uint64_t> failures{0};
  std::vector<std::thread> pool;
  for (size_t t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      std::mt19937_64 rng{seed + 1000 + t};
      std::uniform_int_distribution<int> pct{0, 99};
      for (size_t i = 0; i < iterations; ++i) {
        bool fail = pct(rng) < 10;
        failures += fail ? 1 : 0;
        auto r = b.call([&]() -> keel::expected<int> {
          if (fail)
            return keel::unavailable_error("x");
          return 1;
        });
        ASSERT_EQ(r.has_value(), !fail);
      }
    });
  }
  for (auto& th : pool)
    th.join();
  auto m = b.metrics();
  EXPECT_EQ(m.state, breaker_state::closed);
  EXPECT_EQ(m.buffered_calls, std::min<uint64_t>(1000, threads * iterations));
  EXPECT_EQ(m.not_permitted_calls, 0u);
  EXPECT_LT(m.failure_rate, 50);
}

} // namespace
