// run_config from JSON: every field, and a clear error for each kind of bad input.

#include "keel/error.hpp"
#include "keel/pipeline.hpp"
#include "keel/pipeline/config.hpp"

#include <boost/json/parse.hpp>
#include <caf/all.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <mutex>
#include <numeric>
#include <set>

using namespace std::chrono_literals;
using testing::HasSubstr;

namespace {

TEST(RunConfigJson, ReadsEveryField) {
  auto c = keel::run_config_from_json_string(R"({
    "name": "import", "batch_size": 64, "credit": 2, "deadline_ms": 1500.5,
    "max_errors": 7, "ordered_results": true, "latency_sample": 1,
    "progress_every_ms": 250, "seed": 42,
    "policy": {"mode": "fail_fast",
               "rules": [{"code": "already_exists", "class": "skip"},
                         {"category": "etl.schema", "class": "poison"}]},
    "retry": {"max_attempts": 5, "initial_backoff_ms": 0.5, "max_backoff_ms": 20,
              "multiplier": 3, "jitter": 0, "retryable": ["unavailable", "aborted"]},
    "budget": {"ratio": 0.5, "min_retries": 3},
    "stages": {"parse": {"workers": 4, "ordered": true, "credit": 8,
                         "retry": {"max_attempts": 1},
                         "policy": {"mode": "collect_all"}}}
  })");
  ASSERT_TRUE(c.has_value()) << keel::to_string(c.error());
  EXPECT_EQ(c->name, "import");
  EXPECT_EQ(c->batch_size, 64u);
  EXPECT_EQ(c->credit, 2u);
  ASSERT_TRUE(c->deadline);
  EXPECT_EQ(*c->deadline, std::chrono::nanoseconds{1'500'500'000});
  EXPECT_EQ(c->max_errors, 7u);
  EXPECT_TRUE(c->ordered_results);
  EXPECT_EQ(c->latency_sample, 1u);
  EXPECT_EQ(c->progress_every, 250ms);
  EXPECT_EQ(c->seed, 42u);
  EXPECT_EQ(c->policy.mode(), keel::policy_mode::fail_fast);
  EXPECT_EQ(c->policy.classify(keel::already_exists_error("dup")), keel::error_class::skip);
  EXPECT_EQ(c->policy.classify(keel::invalid_argument_error("x")), keel::error_class::critical);
  EXPECT_EQ(c->retry.max_attempts, 5u);
  EXPECT_EQ(c->retry.initial_backoff, 500us);
  EXPECT_EQ(c->retry.max_backoff, 20ms);
  EXPECT_EQ(c->retry.multiplier, 3.0);
  EXPECT_EQ(c->retry.jitter, 0.0);
  EXPECT_TRUE(c->retry.retryable_error(keel::aborted_error("x")));
  EXPECT_FALSE(c->retry.retryable_error(keel::resource_exhausted_error("x")));
  EXPECT_EQ(c->budget.ratio, 0.5);
  EXPECT_EQ(c->budget.min_retries, 3u);
  ASSERT_EQ(c->stages.count("parse"), 1u);
  const auto& s = c->stages.at("parse");
  EXPECT_EQ(s.workers, 4u);
  EXPECT_EQ(s.ordered, true);
  EXPECT_EQ(s.credit, 8u);
  ASSERT_TRUE(s.retry);
  EXPECT_EQ(s.retry->max_attempts, 1u);
  ASSERT_TRUE(s.policy);
  EXPECT_EQ(s.policy->mode(), keel::policy_mode::collect_all);
}

TEST(RunConfigJson, AbsentFieldsKeepTheBase) {
  keel::run_config base;
  base.name = "base";
  base.batch_size = 17;
  auto c = keel::run_config_from_json_string(R"({"credit": 9})", base);
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->name, "base");
  EXPECT_EQ(c->batch_size, 17u);
  EXPECT_EQ(c->credit, 9u);
  EXPECT_FALSE(c->deadline);
}

TEST(RunConfigJson, FileRulesComeBeforeTheModeDefaults) {
  auto p = keel::error_policy_from_json(
      boost::json::parse(R"({"mode": "hybrid", "rules": [{"code": "panic", "class": "item"}]})"));
  ASSERT_TRUE(p.has_value());
  // hybrid() alone makes panic poison; the file's rule wins.
  EXPECT_EQ(p->classify(keel::panic_error("boom")), keel::error_class::item);
  EXPECT_EQ(p->classify(keel::internal_error("bug")), keel::error_class::critical);
}

struct bad_case {
  const char* json;
  const char* message;
};

// Test names show what each case expects (not the bytes of two pointers).
void PrintTo(const bad_case& c, std::ostream* os) {
  *os << c.message;
}

class RunConfigJsonBad : public testing::TestWithParam<bad_case> {};

TEST_P(RunConfigJsonBad, NamesTheProblem) {
  auto c = keel::run_config_from_json_string(GetParam().json);
  ASSERT_FALSE(c.has_value()) << GetParam().json;
  EXPECT_EQ(c.error().code(), keel::code::invalid_argument);
  EXPECT_THAT(keel::to_string(c.error()), HasSubstr(GetParam().message));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, RunConfigJsonBad,
    testing::Values(
        bad_case{"{", "invalid JSON"}, bad_case{"[]", "run_config: expected an object"},
        bad_case{R"({"batch_sise": 3})", "unknown field 'batch_sise'"},
        bad_case{R"({"batch_size": "big"})", "run_config.batch_size: expected an integer"},
        bad_case{R"({"batch_size": 0})", "run_config.batch_size: expected an integer in 1.."},
        bad_case{R"({"ordered_results": 1})", "run_config.ordered_results: expected a boolean"},
        bad_case{R"({"deadline_ms": -5})", "run_config.deadline_ms: expected a number in 0.."},
        bad_case{R"({"retry": {"jitter": 1.5}})", "run_config.retry.jitter: expected a number"},
        bad_case{R"({"retry": {"retryable": ["flaky"]}})",
                 "run_config.retry.retryable[0]: unknown code \"flaky\""},
        bad_case{R"({"retry": {"initial_backoff_ms": 10, "max_backoff_ms": 1}})",
                 "max_backoff_ms is below initial_backoff_ms"},
        bad_case{R"({"policy": {"mode": "yolo"}})", "run_config.policy.mode: unknown mode"},
        bad_case{R"({"policy": {"rules": [{"code": "internal"}]}})",
                 "run_config.policy.rules[0]: missing field 'class'"},
        bad_case{R"({"policy": {"rules": [{"class": "skip"}]}})",
                 "exactly one of 'code' or 'category'"},
        bad_case{R"({"policy": {"rules": [{"code": "internal", "class": "fatal"}]}})",
                 "unknown class \"fatal\""},
        bad_case{R"({"budget": {"ratio": "x"}})", "run_config.budget.ratio: expected a number"},
        bad_case{R"({"stages": {"parse": {"workers": 0}}})",
                 "run_config.stages.parse.workers: expected an integer in 1..1024"},
        bad_case{R"({"stages": {"parse": {"threads": 2}}})", "unknown field 'threads'"}));

struct config : caf::actor_system_config {
  config() {
    keel::add_error_types(*this);
    set("scheduler.max-threads", 2);
  }
};

TEST(RunConfigJson, StageOverridesApplyByName) {
  config cfg;
  caf::actor_system sys{cfg};
  auto c = keel::run_config_from_json_string(
      R"({"ordered_results": true, "stages": {"square": {"workers": 3, "ordered": true}}})");
  ASSERT_TRUE(c.has_value());
  std::vector<int> xs(500);
  std::iota(xs.begin(), xs.end(), 0);
  std::mutex mtx;
  std::set<uint32_t> workers;
  auto r = keel::pipeline_from(xs)
               .map("square",
                    [&](int x, keel::item_context& ctx) {
                      std::lock_guard<std::mutex> g{mtx};
                      workers.insert(ctx.worker());
                      return x * x;
                    })
               .run(sys, *c);
  EXPECT_FALSE(r.error);
  ASSERT_EQ(r.outputs.size(), 500u);
  EXPECT_EQ(r.stages.at(0).workers, 3u);
  EXPECT_EQ(r.outputs[499], 499 * 499);
  EXPECT_LE(workers.size(), 3u);
}

TEST(RunConfigJson, OverrideForAnUnknownStageFailsTheRun) {
  config cfg;
  caf::actor_system sys{cfg};
  auto c = keel::run_config_from_json_string(R"({"stages": {"pasre": {"workers": 2}}})");
  ASSERT_TRUE(c.has_value());
  auto r = keel::pipeline_from(std::vector<int>{1, 2, 3})
               .map("parse", [](int x) { return x; })
               .run(sys, *c);
  EXPECT_EQ(r.error.code(), keel::code::invalid_argument);
  EXPECT_THAT(keel::to_string(r.error), HasSubstr("stage \"pasre\""));
  EXPECT_EQ(r.counts.total(), 0u);
}

} // namespace
