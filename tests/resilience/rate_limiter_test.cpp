// keel::rate_limiter: token bucket refill under a fake clock, per-key
// buckets, the refusal's message, bounded memory and the JSON reader. Time
// only moves when a test moves it.

#include "keel/resilience/rate_limiter.hpp"

#include <memory>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "keel/testing/matchers.hpp"

#include "fake_clock.hpp"

namespace {

using namespace std::chrono_literals;
using keel::code;
using keel::resilience_code;
using keel::testing::FailedWith;
using keel::testing::IsOk;
using ::testing::HasSubstr;

using keel_test::fake_clock;

keel::rate_limiter_config cfg(double rate, double burst, size_t max_keys = 100'000) {
  keel::rate_limiter_config c;
  c.name = "api";
  c.rate = rate;
  c.burst = burst;
  c.max_keys = max_keys;
  return c;
}

TEST(RateLimiter, BurstThenRefillAtTheRate) {
  fake_clock clock;
  keel::rate_limiter rl{cfg(10, 5), clock.fn()}; // a token every 100 ms
  for (int i = 0; i < 5; ++i)
    EXPECT_THAT(rl.try_acquire("u"), IsOk()) << i;
  auto refused = rl.try_acquire("u");
  EXPECT_THAT(refused, FailedWith(resilience_code::rate_limited,
                                  HasSubstr("rate limiter api: key u has 0 of 1 tokens; "
                                            "enough in 100.000 ms")));
  EXPECT_THAT(refused, FailedWith(code::resource_exhausted));
  EXPECT_EQ(rl.time_until_available("u"), 100ms);
  clock.advance(40ms);
  EXPECT_EQ(rl.time_until_available("u"), 60ms);
  EXPECT_FALSE(rl.try_acquire("u"));
  clock.advance(60ms);
  EXPECT_EQ(rl.time_until_available("u"), 0ns);
  EXPECT_THAT(rl.try_acquire("u"), IsOk());
  EXPECT_FALSE(rl.try_acquire("u"));
  // Refill never exceeds the burst.
  clock.advance(1h);
  for (int i = 0; i < 5; ++i)
    EXPECT_THAT(rl.try_acquire("u"), IsOk());
  EXPECT_FALSE(rl.try_acquire("u"));
  auto s = rl.stats();
  EXPECT_EQ(s.admitted, 11u);
  EXPECT_EQ(s.rejected, 4u);
}

TEST(RateLimiter, TakesSeveralTokensAtOnceOrNone) {
  fake_clock clock;
  keel::rate_limiter rl{cfg(1, 10), clock.fn()};
  EXPECT_THAT(rl.try_acquire("k", 7), IsOk());
  EXPECT_THAT(rl.try_acquire("k", 4), FailedWith(resilience_code::rate_limited));
  EXPECT_EQ(rl.time_until_available("k", 4), 1s) << "a refusal takes nothing";
  EXPECT_THAT(rl.try_acquire("k", 3), IsOk());
  EXPECT_THAT(rl.try_acquire("k", 11), FailedWith(code::invalid_argument, HasSubstr("burst")));
  EXPECT_EQ(rl.time_until_available("k", 11), std::chrono::nanoseconds::max());
}

TEST(RateLimiter, KeysHaveTheirOwnBuckets) {
  fake_clock clock;
  keel::rate_limiter rl{cfg(1, 3), clock.fn()};
  int a_ok = 0;
  for (int i = 0; i < 1000; ++i)
    a_ok += rl.try_acquire("A").has_value();
  int b_ok = 0;
  for (int i = 0; i < 3; ++i)
    b_ok += rl.try_acquire("B").has_value();
  EXPECT_EQ(a_ok, 3);
  EXPECT_EQ(b_ok, 3) << "A's flood took nothing from B";
  EXPECT_EQ(rl.time_until_available("C"), 0ns) << "a new key starts full";
}

TEST(RateLimiter, FullIdleBucketsAreDroppedSoMemoryStaysBounded) {
  fake_clock clock;
  keel::rate_limiter rl{cfg(1000, 1, 160), clock.fn()}; // 10 buckets per shard
  for (int i = 0; i < 10'000; ++i) {
    ASSERT_TRUE(rl.try_acquire("user-" + std::to_string(i)));
    clock.advance(1ms); // each bucket is full again a millisecond later
  }
  EXPECT_LE(rl.stats().keys, 16u * 20u) << "swept as shards filled up";
  clock.advance(1s);
  EXPECT_GT(rl.trim(), 0u);
  EXPECT_EQ(rl.stats().keys, 0u);
  // Buckets that are not full are kept: dropping them would give tokens back.
  keel::rate_limiter slow{cfg(0.001, 1, 16), clock.fn()};
  for (int i = 0; i < 100; ++i)
    ASSERT_TRUE(slow.try_acquire(std::to_string(i)));
  EXPECT_EQ(slow.stats().keys, 100u);
  EXPECT_FALSE(slow.try_acquire("42"));
}

TEST(RateLimiterJson, ReadsEveryField) {
  auto c = keel::rate_limiter_config_from_json_string(
      R"({"name": "api", "rate": 2.5, "burst": 10, "max_keys": 1000})");
  ASSERT_THAT(c, IsOk());
  EXPECT_EQ(c->name, "api");
  EXPECT_EQ(c->rate, 2.5);
  EXPECT_EQ(c->burst, 10.0);
  EXPECT_EQ(c->max_keys, 1000u);
}

TEST(RateLimiterJson, ErrorsNameTheField) {
  for (auto [json, message] : {
           std::pair{R"({"rate": 0})", "rate_limiter.rate: expected a number in"},
           std::pair{R"({"rate": "fast"})", "rate_limiter.rate"},
           std::pair{R"({"burst": 0.5})", "rate_limiter.burst"},
           std::pair{R"({"max_keys": 0})", "rate_limiter.max_keys"},
           std::pair{R"({"per_second": 3})", "rate_limiter: unknown field 'per_second'"},
       })
    EXPECT_THAT(keel::rate_limiter_config_from_json_string(json),
                FailedWith(code::invalid_argument, HasSubstr(message)))
        << json;
}

} // namespace
