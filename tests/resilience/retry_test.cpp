// keel::retry_policy: every backoff kind's bounds and seeded sequence, the
// stateful decision (attempts, codes, max_elapsed) and the JSON reader. No
// test sleeps or asserts on a measured duration: delays are values.

#include "keel/resilience/retry.hpp"

#include <iostream>
#include <random>
#include <vector>

#include <boost/json/parse.hpp>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "../test_env.hpp"
#include "keel/pipeline/config.hpp"
#include "keel/testing/matchers.hpp"

namespace {

using namespace std::chrono_literals;
using keel::backoff_kind;
using keel::code;
using keel::retry_verdict;
using keel::testing::FailedWith;
using ::testing::HasSubstr;
using ns = std::chrono::nanoseconds;

uint64_t seed_for(const char* test) {
  auto s = keel_test::test_seed();
  std::cout << test << ": KEEL_TEST_SEED=" << s << "\n";
  return s;
}

keel::retry_policy policy(backoff_kind k) {
  auto p = keel::retry_policy{}.with_kind(k).with_backoff(10ms, 1s).with_max_attempts(100);
  return p;
}

/// The delays of one operation's retries, through the stateful API.
std::vector<ns> sequence(const keel::retry_policy& p, uint64_t seed, int n) {
  std::mt19937_64 rng{seed};
  keel::retry_state st;
  std::vector<ns> out;
  for (int i = 0; i < n; ++i) {
    auto d = p.decide(keel::unavailable_error("down"), st, 0ns, rng);
    EXPECT_TRUE(d) << keel::to_string(d.verdict);
    out.push_back(d.delay);
  }
  return out;
}

TEST(RetryBackoff, ConstantIgnoresAttemptAndJitter) {
  auto p = policy(backoff_kind::constant);
  p.jitter = 0.5;
  std::mt19937_64 rng{1};
  for (uint32_t n : {1u, 2u, 3u, 10u, UINT32_MAX})
    EXPECT_EQ(p.delay(n, rng), 10ms) << n;
  for (auto d : sequence(p, 1, 20))
    EXPECT_EQ(d, 10ms);
}

TEST(RetryBackoff, ExponentialGrowsToTheCapAndJitterOnlyShortens) {
  auto p = policy(backoff_kind::exponential);
  p.jitter = 0;
  p.max_backoff = 100ms;
  std::vector<ns> want{10ms, 20ms, 40ms, 80ms, 100ms, 100ms};
  EXPECT_EQ(sequence(p, 1, 6), want);
  p.jitter = 0.2;
  auto seed = seed_for("ExponentialGrowsToTheCapAndJitterOnlyShortens");
  auto got = sequence(p, seed, 6);
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_LE(got[i], want[i]);
    EXPECT_GE(got[i], want[i] * 8 / 10);
  }
}

TEST(RetryBackoff, FullJitterIsUniformBelowTheExponentialCap) {
  auto p = policy(backoff_kind::full_jitter);
  p.max_backoff = 80ms;
  std::mt19937_64 rng{seed_for("FullJitterIsUniformBelowTheExponentialCap")};
  for (uint32_t n = 2; n < 8; ++n) {
    auto cap = std::min<ns>(80ms, 10ms * (1 << (n - 2)));
    ns lo = ns::max(), hi = 0ns;
    for (int i = 0; i < 2000; ++i) {
      auto d = p.delay(n, rng);
      ASSERT_GE(d, 0ns);
      ASSERT_LT(d, cap);
      lo = std::min(lo, d);
      hi = std::max(hi, d);
    }
    // 2000 uniform draws: the extremes are near both ends of [0, cap).
    EXPECT_LT(lo, cap / 20) << n;
    EXPECT_GT(hi, cap * 19 / 20) << n;
  }
}

TEST(RetryBackoff, DecorrelatedJitterStaysBetweenBaseAndThreeTimesThePrevious) {
  auto p = policy(backoff_kind::decorrelated_jitter);
  p.max_backoff = 500ms;
  auto seed = seed_for("DecorrelatedJitterStaysBetweenBaseAndThreeTimesThePrevious");
  for (int run = 0; run < 50; ++run) {
    auto seq = sequence(p, seed + static_cast<uint64_t>(run), 30);
    ns prev = 10ms; // AWS: sleep starts at base
    for (auto d : seq) {
      ASSERT_GE(d, 10ms);
      ASSERT_LE(d, std::min<ns>(500ms, 3 * prev));
      prev = d;
    }
  }
  // The stateless form assumes the previous delay was the exponential one.
  std::mt19937_64 rng{seed};
  for (int i = 0; i < 200; ++i) {
    auto d = p.delay(2, rng);
    ASSERT_GE(d, 10ms);
    ASSERT_LE(d, 30ms);
    auto d4 = p.delay(4, rng); // previous = 20ms
    ASSERT_GE(d4, 10ms);
    ASSERT_LE(d4, 60ms);
  }
}

TEST(RetryBackoff, SeededSequencesAreReproducibleForEveryKind) {
  auto seed = seed_for("SeededSequencesAreReproducibleForEveryKind");
  for (auto k :
       {backoff_kind::exponential, backoff_kind::full_jitter, backoff_kind::decorrelated_jitter}) {
    auto p = policy(k);
    EXPECT_EQ(sequence(p, seed, 20), sequence(p, seed, 20)) << keel::to_string(k);
    EXPECT_NE(sequence(p, seed, 20), sequence(p, seed + 1, 20)) << keel::to_string(k);
  }
}

TEST(RetryBackoff, KindNamesRoundTrip) {
  for (auto k : {backoff_kind::constant, backoff_kind::exponential, backoff_kind::full_jitter,
                 backoff_kind::decorrelated_jitter})
    EXPECT_EQ(keel::backoff_kind_from_string(keel::to_string(k)), k);
  EXPECT_FALSE(keel::backoff_kind_from_string("linear"));
}

TEST(RetryDecide, CountsAttemptsAndRemembersTheDelay) {
  auto p = keel::retry_policy{}.with_max_attempts(3).with_kind(backoff_kind::constant);
  std::mt19937_64 rng{1};
  keel::retry_state st;
  auto err = keel::unavailable_error("down");
  auto d = p.decide(err, st, 0ns, rng);
  EXPECT_EQ(d.verdict, retry_verdict::retry);
  EXPECT_EQ(st.attempts, 2u);
  EXPECT_EQ(st.previous_delay, 1ms);
  EXPECT_TRUE(p.decide(err, st, 0ns, rng));
  EXPECT_EQ(st.attempts, 3u);
  EXPECT_EQ(p.decide(err, st, 0ns, rng).verdict, retry_verdict::attempts_spent);
  EXPECT_EQ(st.attempts, 3u) << "no retry: the state stays";
  keel::retry_state fresh;
  EXPECT_EQ(p.decide(keel::invalid_argument_error("bad"), fresh, 0ns, rng).verdict,
            retry_verdict::not_retryable);
  EXPECT_EQ(p.decide(keel::error{}, fresh, 0ns, rng).verdict, retry_verdict::success);
  EXPECT_EQ(keel::retry_policy::none().decide(err, fresh, 0ns, rng).verdict,
            retry_verdict::not_retryable);
}

TEST(RetryDecide, MaxElapsedStopsRetriesThatWouldStartTooLate) {
  auto p = keel::retry_policy{}
               .with_max_attempts(100)
               .with_kind(backoff_kind::constant)
               .with_backoff(10ms, 10ms)
               .with_max_elapsed(100ms);
  std::mt19937_64 rng{1};
  keel::retry_state st;
  auto err = keel::unavailable_error("down");
  EXPECT_TRUE(p.decide(err, st, 0ns, rng));
  EXPECT_TRUE(p.decide(err, st, 90ms, rng)) << "starts at 100 ms: within the budget";
  auto d = p.decide(err, st, 91ms, rng);
  EXPECT_EQ(d.verdict, retry_verdict::time_spent);
  EXPECT_EQ(d.delay, 10ms);
  EXPECT_EQ(st.attempts, 3u);
  // A simulated operation: each attempt takes 7 ms, then waits 10 ms.
  keel::retry_state op;
  ns elapsed = 0ns;
  int attempts = 1;
  for (;;) {
    elapsed += 7ms;
    auto x = p.decide(err, op, elapsed, rng);
    if (!x) {
      EXPECT_EQ(x.verdict, retry_verdict::time_spent);
      break;
    }
    elapsed += x.delay;
    ++attempts;
  }
  EXPECT_EQ(attempts, 6); // retry 6 would start at 6*7 + 6*10 = 102 ms
  p.max_elapsed = 0ns;
  EXPECT_TRUE(p.within_budget(1000h, 1h)) << "0 = no budget";
}

TEST(RetryJson, ReadsEveryField) {
  auto v = boost::json::parse(R"({"max_attempts": 7, "initial_backoff_ms": 2,
      "max_backoff_ms": 50, "multiplier": 3, "jitter": 0.1, "backoff": "decorrelated_jitter",
      "max_elapsed_ms": 1500, "retryable": ["unavailable", "aborted"]})");
  auto p = keel::retry_policy_from_json(v);
  ASSERT_TRUE(p) << keel::to_string(p.error());
  EXPECT_EQ(p->max_attempts, 7u);
  EXPECT_EQ(p->initial_backoff, 2ms);
  EXPECT_EQ(p->max_backoff, 50ms);
  EXPECT_EQ(p->multiplier, 3.0);
  EXPECT_EQ(p->jitter, 0.1);
  EXPECT_EQ(p->backoff, backoff_kind::decorrelated_jitter);
  EXPECT_EQ(p->max_elapsed, 1500ms);
  EXPECT_EQ(p->retryable, (std::vector<code>{code::unavailable, code::aborted}));
  for (auto [text, k] : {std::pair{"constant", backoff_kind::constant},
                         std::pair{"exponential", backoff_kind::exponential},
                         std::pair{"full_jitter", backoff_kind::full_jitter}}) {
    auto q = keel::retry_policy_from_json(
        boost::json::parse(std::string{R"({"backoff": ")"} + text + "\"}"));
    ASSERT_TRUE(q);
    EXPECT_EQ(q->backoff, k);
  }
}

TEST(RetryJson, ErrorsNameTheField) {
  struct bad_case {
    const char* json;
    const char* message;
  };
  for (auto [json, message] : {
           bad_case{R"({"backoff": "linear"})", "retry_policy.backoff: unknown backoff \"linear\""},
           bad_case{R"({"backoff": 3})", "retry_policy.backoff"},
           bad_case{R"({"max_elapsed_ms": -1})", "retry_policy.max_elapsed_ms: expected a number"},
           bad_case{R"({"max_elapsed_ms": "1s"})", "retry_policy.max_elapsed_ms"},
           bad_case{R"({"jitter": 1.5})", "retry_policy.jitter: expected a number in 0..1"},
           bad_case{R"({"max_attempts": 0})", "retry_policy.max_attempts"},
           bad_case{R"({"retryable": ["flaky"]})", "retry_policy.retryable[0]: unknown code"},
           bad_case{R"({"tries": 3})", "retry_policy: unknown field 'tries'"},
       }) {
    auto p = keel::retry_policy_from_json(boost::json::parse(json));
    EXPECT_THAT(p, FailedWith(code::invalid_argument, HasSubstr(message))) << json;
  }
}

TEST(RetryJson, PipelineConfigReadsTheNewFields) {
  auto c = keel::run_config_from_json_string(
      R"({"retry": {"backoff": "full_jitter", "max_elapsed_ms": 250},
          "stages": {"s": {"retry": {"backoff": "constant"}}}})");
  ASSERT_TRUE(c) << keel::to_string(c.error());
  EXPECT_EQ(c->retry.backoff, backoff_kind::full_jitter);
  EXPECT_EQ(c->retry.max_elapsed, 250ms);
  ASSERT_TRUE(c->stages.at("s").retry);
  EXPECT_EQ(c->stages.at("s").retry->backoff, backoff_kind::constant);
  EXPECT_THAT(keel::run_config_from_json_string(R"({"retry": {"backoff": "x"}})"),
              FailedWith(code::invalid_argument, HasSubstr("run_config.retry.backoff")));
}

} // namespace
