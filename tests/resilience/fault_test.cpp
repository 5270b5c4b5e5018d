// keel::fault_injector: chosen keys, seeded random shares (reproducible by
// seed, by key whatever the order), latency as a value, throwing, wrap(),
// counts and the JSON reader. Latency is only ever returned, never slept.

#include "keel/resilience/fault.hpp"

#include <algorithm>
#include <iostream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "../test_env.hpp"
#include "keel/testing/matchers.hpp"

namespace {

using namespace std::chrono_literals;
using keel::code;
using keel::fault_action;
using keel::resilience_code;
using keel::testing::FailedWith;
using keel::testing::IsOk;
using keel::testing::IsOkAndHolds;
using ::testing::HasSubstr;

uint64_t seed_for(const char* test) {
  auto s = keel_test::test_seed();
  std::cout << test << ": KEEL_TEST_SEED=" << s << "\n";
  return s;
}

keel::fault_rule rule(std::string name, double p = 1.0) {
  keel::fault_rule r;
  r.name = std::move(name);
  r.probability = p;
  return r;
}

/// Which of `n` calls (keys "0".."n-1", in order) fail.
std::vector<int> failing(keel::fault_injector& f, int n) {
  std::vector<int> out;
  for (int i = 0; i < n; ++i)
    if (f.decide(std::to_string(i)).err)
      out.push_back(i);
  return out;
}

TEST(FaultInjector, FailsChosenKeysNamingTheRule) {
  keel::fault_config c;
  auto r = rule("bad-items");
  r.keys = {"7", "13"};
  c.rules.push_back(r);
  keel::fault_injector f{c};
  EXPECT_EQ(failing(f, 20), (std::vector<int>{7, 13}));
  auto d = f.decide("7");
  EXPECT_THAT(d.err, FailedWith(resilience_code::injected_fault,
                                HasSubstr("injected fault (rule bad-items) for key 7")));
  EXPECT_THAT(d.err, FailedWith(code::unavailable)) << "a transient outage to retries";
  EXPECT_FALSE(d.throws);
  EXPECT_EQ(f.injected(), 3u);
  EXPECT_EQ(f.injected("bad-items"), 3u);
  EXPECT_EQ(f.calls(), 21u);
}

TEST(FaultInjector, PredicateChoosesKeys) {
  keel::fault_config c;
  auto r = rule("odd");
  r.predicate = [](std::string_view k) { return !k.empty() && (k.back() - '0') % 2 == 1; };
  c.rules.push_back(r);
  keel::fault_injector f{c};
  EXPECT_EQ(failing(f, 6), (std::vector<int>{1, 3, 5}));
}

TEST(FaultInjector, RandomShareIsReproducibleBySeed) {
  auto seed = seed_for("RandomShareIsReproducibleBySeed");
  keel::fault_config c;
  c.seed = seed;
  c.rules.push_back(rule("flaky", 0.25));
  keel::fault_injector a{c}, b{c};
  auto fa = failing(a, 4000);
  EXPECT_EQ(fa, failing(b, 4000));
  // Roughly a quarter (binomial, sd ~27: far outside 6 sd never happens).
  EXPECT_GT(fa.size(), 800u);
  EXPECT_LT(fa.size(), 1200u);
  c.seed = seed + 1;
  keel::fault_injector other{c};
  EXPECT_NE(fa, failing(other, 4000));
}

TEST(FaultInjector, ByKeyPicksTheSameKeysInAnyOrder) {
  auto seed = seed_for("ByKeyPicksTheSameKeysInAnyOrder");
  keel::fault_config c;
  c.seed = seed;
  auto r = rule("sticky", 0.1);
  r.by_key = true;
  c.rules.push_back(r);
  keel::fault_injector forward{c}, backward{c};
  std::vector<int> fw = failing(forward, 2000), bw;
  for (int i = 1999; i >= 0; --i)
    if (backward.decide(std::to_string(i)).err)
      bw.push_back(i);
  std::reverse(bw.begin(), bw.end());
  EXPECT_EQ(fw, bw);
  ASSERT_FALSE(fw.empty());
  EXPECT_TRUE(forward.decide(std::to_string(fw[0])).err) << "the same key fails again";
}

TEST(FaultInjector, MaxHitsLetsADependencyRecover) {
  keel::fault_config c;
  auto r = rule("outage");
  r.max_hits = 3;
  c.rules.push_back(r);
  keel::fault_injector f{c};
  EXPECT_EQ(failing(f, 10), (std::vector<int>{0, 1, 2}));
}

TEST(FaultInjector, LatencyIsReturnedAndAddsUpUntilAFailure) {
  keel::fault_config c;
  auto slow = rule("slow");
  slow.action = fault_action::latency;
  slow.latency = 5ms;
  auto slower = slow;
  slower.name = "slower";
  slower.latency = 7ms;
  auto fail = rule("down");
  fail.keys = {"x"};
  auto never = rule("after-failure");
  never.action = fault_action::latency;
  never.latency = 1h;
  c.rules = {slow, slower, fail, never};
  keel::fault_injector f{c};
  auto d = f.decide("a");
  EXPECT_EQ(d.delay, 12ms + 1h);
  EXPECT_FALSE(d.err);
  auto x = f.decide("x");
  EXPECT_EQ(x.delay, 12ms) << "the walk ends at the first failure";
  EXPECT_TRUE(x.err);
  EXPECT_EQ(f.injected("after-failure"), 1u);
}

TEST(FaultInjector, ThrowRuleThrowsFromInjectAndWrap) {
  keel::fault_config c;
  auto r = rule("boom");
  r.action = fault_action::throw_exception;
  r.keys = {"99"};
  c.rules.push_back(r);
  keel::fault_injector f{c};
  EXPECT_TRUE(f.decide("99").throws);
  EXPECT_THROW((void)f.inject("99"), keel::injected_exception);
  auto g = f.wrap([](int x) { return x + 1; }, [](int x) { return std::to_string(x); });
  EXPECT_EQ(g(1), 2);
  try {
    g(99);
    FAIL() << "no exception";
  } catch (const keel::injected_exception& e) {
    EXPECT_THAT(e.error(), FailedWith(resilience_code::injected_fault, HasSubstr("rule boom")));
  }
}

TEST(FaultInjector, WrapReturnsTheFailureWhenTheResultCanHoldIt) {
  keel::fault_config c;
  auto r = rule("flaky-db");
  r.keys = {"2"};
  r.code = code::deadline_exceeded;
  c.rules.push_back(r);
  keel::fault_injector f{c};
  auto lookup = f.wrap([](const std::string& id) -> keel::expected<int> { return std::stoi(id); },
                       [](const std::string& id) { return id; });
  EXPECT_THAT(lookup("1"), IsOkAndHolds(1));
  auto failed = lookup("2");
  EXPECT_THAT(failed, FailedWith(code::deadline_exceeded));
  EXPECT_THAT(failed, FailedWith(resilience_code::injected_fault)) << "still an injected fault";
  EXPECT_EQ(failed.error().code(), code::deadline_exceeded);
  auto plain = f.wrap([]() -> keel::error { return {}; });
  EXPECT_THAT(plain(), IsOk()) << "key \"\" is not in the rule's keys";
}

TEST(FaultInjector, DisabledInjectorLetsEverythingThrough) {
  keel::fault_config c;
  c.rules.push_back(rule("all"));
  c.enabled = false;
  keel::fault_injector f{c};
  EXPECT_TRUE(f.decide("a").clean());
  f.enabled(true);
  EXPECT_TRUE(f.decide("a").err);
  f.enabled(false);
  EXPECT_THAT(f.inject("a"), IsOk());
  EXPECT_EQ(f.injected(), 1u);
}

TEST(FaultJson, ReadsEveryField) {
  auto c = keel::fault_config_from_json_string(R"({"seed": 42, "enabled": false, "rules": [
      {"name": "flaky-db", "action": "fail", "probability": 0.1, "code": "unavailable",
       "max_hits": 5},
      {"name": "bad-items", "keys": ["7", "13"]},
      {"name": "sticky", "probability": 0.01, "by_key": true},
      {"name": "slow", "action": "latency", "latency_ms": 20, "probability": 0.05},
      {"name": "boom", "action": "throw", "keys": ["99"]}]})");
  ASSERT_THAT(c, IsOk());
  EXPECT_EQ(c->seed, 42u);
  EXPECT_FALSE(c->enabled);
  ASSERT_EQ(c->rules.size(), 5u);
  EXPECT_EQ(c->rules[0].probability, 0.1);
  EXPECT_EQ(c->rules[0].code, code::unavailable);
  EXPECT_EQ(c->rules[0].max_hits, 5u);
  EXPECT_EQ(c->rules[1].keys, (std::vector<std::string>{"7", "13"}));
  EXPECT_TRUE(c->rules[2].by_key);
  EXPECT_EQ(c->rules[3].action, fault_action::latency);
  EXPECT_EQ(c->rules[3].latency, 20ms);
  EXPECT_EQ(c->rules[4].action, fault_action::throw_exception);
}

TEST(FaultJson, ErrorsNameTheField) {
  for (auto [json, message] : {
           std::pair{R"({"rules": [{}, {"probability": 2}]})",
                     "fault_injection.rules[1].probability: expected a number in 0..1, got 2"},
           std::pair{R"({"rules": [{"action": "explode"}]})",
                     "fault_injection.rules[0].action: unknown action \"explode\""},
           std::pair{R"({"rules": [{"keys": [1]}]})", "fault_injection.rules[0].keys[0]"},
           std::pair{R"({"rules": [{"code": "oops"}]})", "fault_injection.rules[0].code"},
           std::pair{R"({"rules": [{"action": "latency"}]})",
                     "fault_injection.rules[0].latency_ms"},
           std::pair{R"({"rules": {}})", "fault_injection.rules: expected an array"},
           std::pair{R"({"seed": -1})", "fault_injection.seed"},
           std::pair{R"({"chaos": 1})", "fault_injection: unknown field 'chaos'"},
       })
    EXPECT_THAT(keel::fault_config_from_json_string(json),
                FailedWith(code::invalid_argument, HasSubstr(message)))
        << json;
}

} // namespace
