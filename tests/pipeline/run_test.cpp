// Pipeline runs: error policies, retries, exceptions and restarts, deadlines,
// cancellation, validation and lifetime. Real scheduler, deterministic
// outcomes: where a test needs a run to be in a given state (cancelled while
// an item waits, ...), a stage function waits for that state instead of
// sleeping and hoping.

#include "helpers.hpp"

#include "keel/error.hpp"
#include "keel/pipeline.hpp"

#include <caf/all.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <any>
#include <atomic>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;
using keel::code;
using keel::error_class;
using keel_test::eventually;
using keel_test::expect_accounted;
using keel_test::finish;
using keel_test::iota;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

class PipelineErrorPolicies : public keel_test::pipeline_test {};
class PipelineRetries : public keel_test::pipeline_test {};
class PipelineExceptions : public keel_test::pipeline_test {};
class PipelineDeadline : public keel_test::pipeline_test {};
class PipelineCancel : public keel_test::pipeline_test {};
class PipelineValidation : public keel_test::pipeline_test {};
class PipelineLifetime : public keel_test::pipeline_test {};

/// What a stage function saw, per item: the attempts, in call order.
/// Thread-safe (stages with several workers call it concurrently).
class call_log {
public:
  void add(int x, uint32_t attempt) {
    std::lock_guard<std::mutex> g{mtx_};
    attempts_[x].push_back(attempt);
  }

  std::vector<uint32_t> of(int x) const {
    std::lock_guard<std::mutex> g{mtx_};
    auto i = attempts_.find(x);
    return i == attempts_.end() ? std::vector<uint32_t>{} : i->second;
  }

  std::map<int, std::vector<uint32_t>> all() const {
    std::lock_guard<std::mutex> g{mtx_};
    return attempts_;
  }

private:
  mutable std::mutex mtx_;
  std::map<int, std::vector<uint32_t>> attempts_;
};

keel::retry_policy fast_retry(uint32_t max_attempts = 3) {
  return keel::retry_policy{}.with_max_attempts(max_attempts).with_backoff(100us, 1ms);
}

const keel::stage_stats& stats_of(const keel::run_report& r, const std::string& name) {
  static const keel::stage_stats none;
  for (const auto& s : r.stages)
    if (s.name == name)
      return s;
  ADD_FAILURE() << "no stage " << name << " in the report";
  return none;
}

std::vector<uint64_t> items_of(const std::vector<keel::item_failure>& fs) {
  std::vector<uint64_t> xs;
  for (const auto& f : fs)
    xs.push_back(f.item);
  return xs;
}

std::vector<uint64_t> items_of(const std::vector<keel::item_note>& ns) {
  std::vector<uint64_t> xs;
  for (const auto& n : ns)
    xs.push_back(n.item);
  return xs;
}

/// Every item read from the source ended exactly once: as an output (the
/// stages of these tests keep the value, so an output names its item), a
/// failure, a dead letter, a skip or a cancellation.
void expect_ended_once(const keel::run_result<int>& r) {
  std::map<uint64_t, int> ends;
  for (int v : r.outputs)
    ++ends[static_cast<uint64_t>(v)];
  for (const auto& f : r.failures)
    ++ends[f.item];
  for (const auto& d : r.dead_letters)
    ++ends[d.item];
  for (const auto& s : r.skipped)
    ++ends[s.item];
  for (const auto& c : r.cancelled_items)
    ++ends[c.item];
  for (const auto& [item, times] : ends)
    ASSERT_EQ(times, 1) << "item " << item << " ended " << times << " times";
  EXPECT_EQ(ends.size(), r.counts.from_source) << r.summary();
}

// -- error policies -----------------------------------------------------------------------

TEST_F(PipelineErrorPolicies, FailFastFirstCriticalErrorEndsAndCancelsTheRun) {
  constexpr int n = 2000;
  call_log seen;
  std::atomic<bool> saw_cancel{false};
  keel::run_config c;
  c.policy = keel::error_policy::fail_fast();
  c.batch_size = 16;
  auto h = keel::pipeline_from(iota(n))
               .map("check",
                    [&](int x, keel::item_context& ctx) -> keel::expected<int> {
                      seen.add(x, ctx.attempt());
                      if (x == 100)
                        return keel::invalid_argument_error("bad 100");
                      if (x > 100) {
                        // Items after the failure wait until the cancellation is
                        // visible, so that the run cannot end before it.
                        if (eventually([&] { return ctx.cancelled(); }, 10s))
                          saw_cancel = true;
                        std::this_thread::sleep_for(20us);
                      }
                      return x;
                    })
               .start(sys, c);
  auto r = finish(h);
  EXPECT_EQ(r.error.code(), code::invalid_argument) << r.summary();
  EXPECT_EQ(r.error.message(), "bad 100");
  auto where = keel::as<keel::stage_info>(r.error);
  ASSERT_TRUE(where.has_value()) << keel::to_string(r.error);
  EXPECT_EQ(where->stage, "check");
  EXPECT_EQ(where->item_id, "100");
  EXPECT_EQ(where->attempt, 1u);
  // The run failed fast (nobody cancelled it from outside), and says so.
  EXPECT_TRUE(r.failed_fast);
  EXPECT_FALSE(r.cancelled);
  EXPECT_THAT(r.summary(), HasSubstr(": failed fast in"));
  ASSERT_EQ(r.failures.size(), 1u);
  EXPECT_EQ(r.failures[0].item, 100u);
  EXPECT_EQ(r.failures[0].origin, 100u);
  EXPECT_EQ(r.failures[0].stage, "check");
  EXPECT_EQ(r.failures[0].attempts, 1u);
  EXPECT_TRUE(saw_cancel) << "item_context::cancelled() never turned true";
  // What had not been processed ended as cancelled (or was never read).
  EXPECT_GT(r.counts.cancelled + r.counts.not_started, 0u) << r.summary();
  EXPECT_EQ(r.cancelled_items.size(), r.counts.cancelled);
  for (const auto& note : r.cancelled_items) {
    ASSERT_EQ(note.reason.code(), code::cancelled) << keel::to_string(note.reason);
    EXPECT_EQ(note.reason.cause(), r.error) << keel::to_string(note.reason);
    EXPECT_THAT(keel::to_string(note.reason), HasSubstr("cancelled after a critical error"));
  }
  // No item was processed twice, and every item read ended exactly once
  // (processed items whose outputs had not left yet end as cancelled).
  auto all = seen.all();
  for (const auto& [x, attempts] : all)
    ASSERT_THAT(attempts, ElementsAre(1u)) << "item " << x;
  EXPECT_GE(all.size(), r.counts.succeeded + 1);
  EXPECT_EQ(r.outputs.size(), r.counts.succeeded);
  EXPECT_EQ(std::count(r.outputs.begin(), r.outputs.end(), 100), 0);
  expect_ended_once(r);
  expect_accounted(r, n);
}

/// 1000 items through 2 workers; every item with x % 10 == 3 fails.
keel::run_result<int> run_collect_all(caf::actor_system& sys, size_t max_errors) {
  keel::run_config c;
  c.policy = keel::error_policy::collect_all();
  c.max_errors = max_errors;
  c.batch_size = 32;
  return keel::pipeline_from(iota(1000))
      .map(
          "check",
          [](int x) -> keel::expected<int> {
            if (x % 10 == 3)
              return keel::invalid_argument_error("bad " + std::to_string(x));
            return x;
          },
          keel::stage_options{}.with_workers(2))
      .run(sys, c);
}

TEST_F(PipelineErrorPolicies, CollectAllListsEveryFailureWithItsStageAndItem) {
  auto r = run_collect_all(sys, 100); // exactly as many as fail: no marker
  ASSERT_EQ(r.failures.size(), 100u) << r.summary();
  for (size_t i = 0; i < r.failures.size(); ++i) {
    const auto& f = r.failures[i];
    EXPECT_EQ(f.item, 10 * i + 3) << "failures are sorted by item";
    EXPECT_EQ(f.origin, f.item);
    EXPECT_EQ(f.stage, "check");
    EXPECT_EQ(f.attempts, 1u);
    EXPECT_EQ(f.error.code(), code::invalid_argument);
    EXPECT_EQ(f.error.message(), "bad " + std::to_string(f.item));
    auto where = keel::as<keel::stage_info>(f.error);
    ASSERT_TRUE(where.has_value()) << keel::to_string(f.error);
    EXPECT_EQ(where->stage, "check");
    EXPECT_EQ(where->item_id, std::to_string(f.item));
    EXPECT_EQ(where->attempt, 1u);
  }
  EXPECT_FALSE(r.cancelled);
  ASSERT_TRUE(r.error.is_join()) << keel::to_string(r.error);
  ASSERT_EQ(r.error.children().size(), 100u);
  for (size_t i = 0; i < 100; ++i)
    EXPECT_EQ(r.error.children()[i], r.failures[i].error);
  EXPECT_FALSE(keel::is(r.error, code::resource_exhausted));
  EXPECT_EQ(r.outputs.size(), 900u);
  EXPECT_EQ(r.counts.failed, 100u);
  EXPECT_EQ(r.counts.succeeded, 900u);
  EXPECT_EQ(stats_of(r, "check").errors_by_code,
            (std::map<std::string, uint64_t>{{"invalid_argument", 100}}));
  expect_accounted(r, 1000);
}

TEST_F(PipelineErrorPolicies, CollectAllCapsTheRunErrorAtMaxErrors) {
  auto r = run_collect_all(sys, 10);
  EXPECT_EQ(r.failures.size(), 100u) << "the cap applies to the run error, not to the list";
  ASSERT_TRUE(r.error.is_join()) << keel::to_string(r.error);
  auto kids = r.error.children();
  ASSERT_EQ(kids.size(), 11u) << keel::to_string(r.error);
  for (size_t i = 0; i < 10; ++i)
    EXPECT_EQ(kids[i], r.failures[i].error) << "the first errors (by item) are kept";
  EXPECT_EQ(kids[10].code(), code::resource_exhausted);
  EXPECT_EQ(kids[10].message(), "(90 more errors)");
  EXPECT_EQ(r.error.code(), code::invalid_argument) << "a join has its first child's code";
  expect_accounted(r, 1000);
}

TEST_F(PipelineErrorPolicies, HybridDeadLettersPanicsAndSkipsWithoutARunError) {
  std::mutex mtx;
  std::vector<uint64_t> dead_seen;
  keel::run_config c;
  c.policy = keel::error_policy::hybrid().on(code::already_exists, error_class::skip);
  c.retry = fast_retry();
  c.batch_size = 32;
  c.on_dead_letter = [&](const keel::dead_item& d) {
    std::lock_guard<std::mutex> g{mtx};
    dead_seen.push_back(d.item);
  };
  auto r = keel::pipeline_from(iota(200))
               .map("work",
                    [](int x) -> keel::expected<int> {
                      if (x % 50 == 1)
                        throw std::runtime_error("boom " + std::to_string(x));
                      if (x % 50 == 2)
                        return keel::already_exists_error("dup " + std::to_string(x));
                      return x;
                    })
               .run(sys, c);
  EXPECT_FALSE(r.error) << keel::to_string(r.error) << "\n" << r.summary();
  EXPECT_FALSE(r.cancelled);
  EXPECT_FALSE(r.failed_fast);
  EXPECT_THAT(r.summary(), HasSubstr(": ok in"));
  // Panics: retried, then dead-lettered with the value.
  ASSERT_EQ(r.dead_letters.size(), 4u) << r.summary();
  for (size_t i = 0; i < 4; ++i) {
    const auto& d = r.dead_letters[i];
    const int x = 50 * static_cast<int>(i) + 1;
    EXPECT_EQ(d.item, static_cast<uint64_t>(x));
    EXPECT_EQ(d.origin, d.item);
    EXPECT_EQ(d.stage, "work");
    EXPECT_EQ(d.attempts, 3u) << "dead-lettered only after every attempt";
    EXPECT_TRUE(keel::is(d.error, code::panic)) << keel::to_string(d.error);
    EXPECT_THAT(keel::to_string(d.error), HasSubstr("boom " + std::to_string(x)));
    ASSERT_TRUE(d.value.has_value());
    EXPECT_EQ(std::any_cast<int>(d.value), x);
  }
  {
    std::lock_guard<std::mutex> g{mtx};
    std::sort(dead_seen.begin(), dead_seen.end());
    EXPECT_THAT(dead_seen, ElementsAre(1u, 51u, 101u, 151u)) << "on_dead_letter, once per item";
  }
  // already_exists: skipped by the rule, not an error.
  EXPECT_THAT(items_of(r.skipped), ElementsAre(2u, 52u, 102u, 152u));
  for (const auto& s : r.skipped) {
    EXPECT_EQ(s.stage, "work");
    EXPECT_EQ(s.reason.code(), code::already_exists);
  }
  EXPECT_TRUE(r.failures.empty());
  EXPECT_EQ(r.counts.skipped, 4u);
  EXPECT_EQ(r.counts.dead_lettered, 4u);
  EXPECT_EQ(r.counts.failed, 0u);
  EXPECT_EQ(r.counts.succeeded, 192u);
  EXPECT_EQ(r.outputs.size(), 192u);
  const auto& s = stats_of(r, "work");
  EXPECT_EQ(s.restarts, 12u) << "every throw restarts the worker";
  EXPECT_EQ(s.retries, 8u);
  EXPECT_EQ(s.errors_by_code,
            (std::map<std::string, uint64_t>{{"already_exists", 4}, {"panic", 12}}));
  EXPECT_EQ(s.dead_lettered, 4u);
  EXPECT_EQ(s.skipped, 4u);
  expect_accounted(r, 200);
}

TEST_F(PipelineErrorPolicies, HybridItemErrorsFormTheRunErrorButDeadLettersDoNot) {
  keel::run_config c;
  c.retry = keel::retry_policy::none();
  auto r = keel::pipeline_from(iota(20))
               .map("work",
                    [](int x) -> keel::expected<int> {
                      if (x == 7)
                        return keel::invalid_argument_error("bad 7");
                      if (x == 8)
                        throw std::logic_error("crash 8");
                      return x;
                    })
               .run(sys, c);
  EXPECT_EQ(r.error.code(), code::invalid_argument) << r.summary();
  EXPECT_EQ(r.error.message(), "bad 7");
  EXPECT_FALSE(keel::is(r.error, code::panic)) << keel::to_string(r.error);
  EXPECT_THAT(items_of(r.failures), ElementsAre(7u));
  ASSERT_EQ(r.dead_letters.size(), 1u);
  EXPECT_EQ(r.dead_letters[0].item, 8u);
  EXPECT_EQ(r.dead_letters[0].attempts, 1u);
  EXPECT_EQ(r.outputs.size(), 18u);
  EXPECT_FALSE(r.failed_fast);
  EXPECT_THAT(r.summary(), HasSubstr(": completed with item errors in"));
  expect_ended_once(r);
  expect_accounted(r, 20);
}

TEST_F(PipelineErrorPolicies, HybridCriticalCodesFailTheRun) {
  for (auto crit : {code::internal, code::data_loss, code::failed_precondition,
                    code::permission_denied, code::unauthenticated}) {
    SCOPED_TRACE(keel::to_string(crit));
    keel::run_config c;
    c.batch_size = 8;
    auto r = keel::pipeline_from(iota(64))
                 .map("work",
                      [crit](int x) -> keel::expected<int> {
                        if (x == 10)
                          return keel::make_error(crit, "fatal 10");
                        return x;
                      })
                 .run(sys, c);
    EXPECT_EQ(r.error.code(), crit) << r.summary();
    EXPECT_EQ(r.error.message(), "fatal 10");
    EXPECT_FALSE(r.error.is_join()) << "fail fast returns the critical error itself";
    EXPECT_TRUE(r.failed_fast);
    EXPECT_FALSE(r.cancelled);
    EXPECT_THAT(items_of(r.failures), ElementsAre(10u));
    for (const auto& note : r.cancelled_items)
      EXPECT_TRUE(keel::is(note.reason, crit)) << keel::to_string(note.reason);
    expect_accounted(r, 64);
  }
}

TEST_F(PipelineErrorPolicies, StagePolicyOverridesTheRunsOnlyForThatStage) {
  // Stage "a" turns internal into an item error and invalid_argument into a
  // skip; stage "b" has no policy of its own (the run's: hybrid).
  auto a_policy = keel::error_policy{}
                      .on(code::internal, error_class::item)
                      .on(code::invalid_argument, error_class::skip);
  auto run = [&](int b_fails, code b_code) {
    return keel::pipeline_from(iota(100))
        .map(
            "a",
            [](int x) -> keel::expected<int> {
              if (x == 5)
                return keel::internal_error("a5");
              if (x == 9)
                return keel::invalid_argument_error("a9");
              return x;
            },
            keel::stage_options{}.with_policy(a_policy))
        .map("b",
             [=](int x) -> keel::expected<int> {
               if (x == b_fails)
                 return keel::make_error(b_code, "b" + std::to_string(x));
               return x;
             })
        .run(sys);
  };
  {
    SCOPED_TRACE("b fails an item with invalid_argument");
    auto r = run(11, code::invalid_argument);
    ASSERT_EQ(r.failures.size(), 2u) << r.summary();
    EXPECT_EQ(r.failures[0].item, 5u);
    EXPECT_EQ(r.failures[0].stage, "a");
    EXPECT_EQ(r.failures[0].error.code(), code::internal);
    EXPECT_EQ(r.failures[1].item, 11u);
    EXPECT_EQ(r.failures[1].stage, "b");
    // Both are item errors: the run error joins them (a critical one would
    // be the run error on its own).
    ASSERT_TRUE(r.error.is_join()) << keel::to_string(r.error);
    EXPECT_EQ(r.error.children().size(), 2u);
    EXPECT_THAT(items_of(r.skipped), ElementsAre(9u));
    EXPECT_EQ(r.skipped[0].stage, "a");
    EXPECT_EQ(r.outputs.size(), 97u);
    EXPECT_EQ(r.counts.cancelled, 0u);
    expect_accounted(r, 100);
  }
  {
    SCOPED_TRACE("b fails an item with internal: critical under the run's policy");
    auto r = run(7, code::internal);
    EXPECT_EQ(r.error.code(), code::internal) << r.summary();
    EXPECT_FALSE(r.error.is_join()) << keel::to_string(r.error);
    auto where = keel::as<keel::stage_info>(r.error);
    ASSERT_TRUE(where.has_value());
    EXPECT_EQ(where->stage, "b");
    EXPECT_EQ(where->item_id, "7");
    // Stage a's internal error (processed first, in the same batch) stayed an item error.
    ASSERT_GE(r.failures.size(), 2u);
    EXPECT_EQ(r.failures[0].item, 5u);
    EXPECT_EQ(r.failures[0].stage, "a");
    expect_accounted(r, 100);
  }
}

TEST_F(PipelineErrorPolicies, AStagePolicyWithoutRulesFallsBackToTheRunsPolicy) {
  // error_policy::fail_fast() has a fallback but no rule: as a stage
  // override it matches nothing, and the run's policy (hybrid) decides.
  auto r = keel::pipeline_from(iota(50))
               .map(
                   "a",
                   [](int x) -> keel::expected<int> {
                     if (x == 3 || x == 5)
                       return keel::invalid_argument_error("a" + std::to_string(x));
                     return x;
                   },
                   keel::stage_options{}.with_policy(keel::error_policy::fail_fast()))
               .run(sys);
  EXPECT_THAT(items_of(r.failures), ElementsAre(3u, 5u));
  ASSERT_TRUE(r.error.is_join()) << "both are item errors: " << keel::to_string(r.error);
  EXPECT_EQ(r.error.children().size(), 2u);
  EXPECT_EQ(r.outputs.size(), 48u);
  expect_accounted(r, 50);
}

// -- retries --------------------------------------------------------------------------

TEST_F(PipelineRetries, UnavailableTwiceThenSuccess) {
  call_log seen;
  keel::run_config c;
  c.retry = fast_retry();
  c.ordered_results = true;
  auto r = keel::pipeline_from(iota(50))
               .map("call",
                    [&](int x, keel::item_context& ctx) -> keel::expected<int> {
                      seen.add(x, ctx.attempt());
                      EXPECT_EQ(ctx.item().attempt, ctx.attempt());
                      if (x == 7 && ctx.attempt() <= 2)
                        return keel::unavailable_error("try later");
                      return x;
                    })
               .run(sys, c);
  EXPECT_FALSE(r.error) << r.summary();
  EXPECT_TRUE(r.failures.empty());
  EXPECT_EQ(r.outputs, iota(50));
  EXPECT_THAT(seen.of(7), ElementsAre(1u, 2u, 3u));
  for (int x = 0; x < 50; ++x) {
    if (x != 7) {
      ASSERT_THAT(seen.of(x), ElementsAre(1u)) << x;
    }
  }
  const auto& s = stats_of(r, "call");
  EXPECT_EQ(s.retries, 2u);
  EXPECT_EQ(s.retries_denied, 0u);
  EXPECT_EQ(s.errors_by_code, (std::map<std::string, uint64_t>{{"unavailable", 2}}));
  EXPECT_EQ(s.in, 50u) << "retries are not counted as input again";
  EXPECT_EQ(r.counts.succeeded, 50u);
  expect_accounted(r, 50);
}

TEST_F(PipelineRetries, NonRetryableCodesAreNotRetried) {
  const std::map<int, code> fail = {{3, code::invalid_argument}, {4, code::not_found},
                                    {5, code::internal},         {6, code::failed_precondition},
                                    {7, code::already_exists},   {8, code::cancelled}};
  call_log seen;
  keel::run_config c;
  c.retry = fast_retry(5);
  c.policy = keel::error_policy::collect_all();
  auto r = keel::pipeline_from(iota(20))
               .map("call",
                    [&](int x, keel::item_context& ctx) -> keel::expected<int> {
                      seen.add(x, ctx.attempt());
                      if (auto i = fail.find(x); i != fail.end())
                        return keel::make_error(i->second, "no");
                      return x;
                    })
               .run(sys, c);
  EXPECT_THAT(items_of(r.failures), ElementsAre(3u, 4u, 5u, 6u, 7u, 8u)) << r.summary();
  for (const auto& f : r.failures) {
    EXPECT_EQ(f.attempts, 1u) << f.item;
    EXPECT_EQ(f.error.code(), fail.at(static_cast<int>(f.item)));
    EXPECT_THAT(seen.of(static_cast<int>(f.item)), ElementsAre(1u)) << f.item;
  }
  const auto& s = stats_of(r, "call");
  EXPECT_EQ(s.retries, 0u);
  EXPECT_EQ(s.errors_by_code.size(), 6u);
  for (const auto& [name, count] : s.errors_by_code)
    EXPECT_EQ(count, 1u) << name;
  expect_accounted(r, 20);
}

TEST_F(PipelineRetries, AnItemFailsAfterExactlyMaxAttempts) {
  call_log seen;
  keel::run_config c;
  c.retry = fast_retry(4);
  auto r = keel::pipeline_from(iota(10))
               .map("call",
                    [&](int x, keel::item_context& ctx) -> keel::expected<int> {
                      seen.add(x, ctx.attempt());
                      if (x == 2)
                        return keel::unavailable_error("down");
                      return x;
                    })
               .run(sys, c);
  ASSERT_EQ(r.failures.size(), 1u) << r.summary();
  const auto& f = r.failures[0];
  EXPECT_EQ(f.item, 2u);
  EXPECT_EQ(f.attempts, 4u);
  auto where = keel::as<keel::stage_info>(f.error);
  ASSERT_TRUE(where.has_value());
  EXPECT_EQ(where->attempt, 4u);
  EXPECT_THAT(seen.of(2), ElementsAre(1u, 2u, 3u, 4u));
  const auto& s = stats_of(r, "call");
  EXPECT_EQ(s.retries, 3u);
  EXPECT_EQ(s.errors_by_code, (std::map<std::string, uint64_t>{{"unavailable", 4}}));
  EXPECT_EQ(r.outputs.size(), 9u);
  expect_accounted(r, 10);
}

TEST_F(PipelineRetries, CustomRetryableCodes) {
  call_log seen;
  keel::run_config c;
  c.retry = fast_retry().with_retryable({code::not_found});
  auto r = keel::pipeline_from(iota(10))
               .map("call",
                    [&](int x, keel::item_context& ctx) -> keel::expected<int> {
                      seen.add(x, ctx.attempt());
                      if (x == 1 && ctx.attempt() == 1)
                        return keel::not_found_error("not yet");
                      if (x == 2)
                        return keel::unavailable_error("down");
                      return x;
                    })
               .run(sys, c);
  EXPECT_THAT(seen.of(1), ElementsAre(1u, 2u));
  EXPECT_THAT(seen.of(2), ElementsAre(1u)) << "unavailable is not in the list";
  EXPECT_THAT(items_of(r.failures), ElementsAre(2u));
  EXPECT_EQ(stats_of(r, "call").retries, 1u);
  EXPECT_EQ(r.outputs.size(), 9u);
  expect_accounted(r, 10);
}

TEST_F(PipelineRetries, StageRetryPolicyReplacesTheRunsForThatStage) {
  call_log at_a, at_b;
  keel::run_config c;
  c.retry = keel::retry_policy::none();
  auto r = keel::pipeline_from(iota(10))
               .map(
                   "a",
                   [&](int x, keel::item_context& ctx) -> keel::expected<int> {
                     at_a.add(x, ctx.attempt());
                     if (x == 3 && ctx.attempt() <= 3)
                       return keel::unavailable_error("a down");
                     return x;
                   },
                   keel::stage_options{}.with_retry(fast_retry(5)))
               .map("b",
                    [&](int x, keel::item_context& ctx) -> keel::expected<int> {
                      at_b.add(x, ctx.attempt());
                      if (x == 4)
                        return keel::unavailable_error("b down");
                      return x;
                    })
               .run(sys, c);
  EXPECT_THAT(at_a.of(3), ElementsAre(1u, 2u, 3u, 4u));
  EXPECT_THAT(at_b.of(3), ElementsAre(1u)) << "attempts count per stage";
  EXPECT_THAT(at_b.of(4), ElementsAre(1u));
  ASSERT_EQ(r.failures.size(), 1u) << r.summary();
  EXPECT_EQ(r.failures[0].item, 4u);
  EXPECT_EQ(r.failures[0].stage, "b");
  EXPECT_EQ(r.failures[0].attempts, 1u);
  EXPECT_EQ(stats_of(r, "a").retries, 3u);
  EXPECT_EQ(stats_of(r, "b").retries, 0u);
  expect_accounted(r, 10);
}

TEST_F(PipelineRetries, TheRetryBudgetCapsRetriesRunWide) {
  keel::run_config c;
  c.retry = fast_retry();
  c.budget = keel::retry_budget{0.0, 3};
  c.batch_size = 4;
  auto r = keel::pipeline_from(iota(20))
               .map(
                   "call",
                   [](int x, keel::item_context& ctx) -> keel::expected<int> {
                     if (ctx.attempt() == 1)
                       return keel::unavailable_error("flaky " + std::to_string(x));
                     return x;
                   },
                   keel::stage_options{}.with_workers(2))
               .run(sys, c);
  const auto& s = stats_of(r, "call");
  EXPECT_EQ(s.retries, 3u) << r.summary();
  EXPECT_EQ(s.retries_denied, 17u);
  EXPECT_EQ(r.outputs.size(), 3u);
  ASSERT_EQ(r.failures.size(), 17u);
  for (const auto& f : r.failures) {
    EXPECT_EQ(f.attempts, 1u);
    EXPECT_EQ(f.error.code(), code::unavailable);
    EXPECT_THAT(keel::to_string(f.error), HasSubstr("retry budget")) << f.item;
  }
  expect_accounted(r, 20);
}

// -- exceptions -------------------------------------------------------------------------

struct crash_log {
  std::mutex mtx;
  std::map<int, std::vector<uint32_t>> attempts;
  /// The stage function's own counter when it first saw each item.
  std::map<int, int> counter_at_first_attempt;
};

/// A stateful stage: counts the items it has seen (a member, so a restart,
/// which makes a fresh copy of the function, starts it over) and throws on
/// the first attempt at every item with x % 20 == 5.
class counting_stage {
public:
  explicit counting_stage(crash_log* log) : log_(log) {}

  int operator()(int x, keel::item_context& ctx) {
    ++seen_;
    {
      std::lock_guard<std::mutex> g{log_->mtx};
      log_->attempts[x].push_back(ctx.attempt());
      if (ctx.attempt() == 1)
        log_->counter_at_first_attempt[x] = seen_;
    }
    if (x % 20 == 5 && ctx.attempt() == 1)
      throw std::runtime_error("boom " + std::to_string(x));
    return x;
  }

private:
  crash_log* log_;
  int seen_ = 0;
};

TEST_F(PipelineExceptions, AThrowingStageIsRestartedAndNoItemIsLostOrRepeated) {
  crash_log log;
  auto events = std::make_shared<keel::event_recorder>();
  keel::run_config c;
  c.retry = fast_retry();
  c.batch_size = 10; // each crash is in the middle of a batch
  c.ordered_results = true;
  c.events = events;
  auto r = keel::pipeline_from(iota(100)).map("work", counting_stage{&log}).run(sys, c);
  EXPECT_FALSE(r.error) << r.summary();
  EXPECT_EQ(r.outputs, iota(100));
  const auto& s = stats_of(r, "work");
  EXPECT_EQ(s.restarts, 5u);
  EXPECT_EQ(s.retries, 5u);
  EXPECT_EQ(s.errors_by_code, (std::map<std::string, uint64_t>{{"panic", 5}}));
  std::lock_guard<std::mutex> g{log.mtx};
  for (int x = 0; x < 100; ++x) {
    if (x % 20 == 5) {
      EXPECT_THAT(log.attempts[x], ElementsAre(1u, 2u)) << "crashing item " << x;
    } else {
      EXPECT_THAT(log.attempts[x], ElementsAre(1u)) << "item " << x << " processed more than once";
    }
  }
  // State starts over after a restart: the item after each crash is the
  // first one the fresh instance sees.
  EXPECT_EQ(log.counter_at_first_attempt[4], 5);
  for (int crash = 5; crash < 100; crash += 20)
    EXPECT_EQ(log.counter_at_first_attempt[crash + 1], 1) << "after the crash at " << crash;
  // The supervisor reported the restarts.
  EXPECT_EQ(events->count(keel::event_kind::restarted), 5u);
  for (const auto& e : events->events()) {
    if (e.kind != keel::event_kind::restarted)
      continue;
    EXPECT_THAT(e.child, HasSubstr("work#0"));
    EXPECT_TRUE(keel::is(e.error, code::panic)) << keel::to_string(e.error);
    EXPECT_THAT(keel::to_string(e.error), HasSubstr("boom"));
  }
  expect_accounted(r, 100);
}

TEST_F(PipelineExceptions, ExceedingTheRestartIntensityAbortsTheRun) {
  keel::run_config c;
  c.retry = keel::retry_policy::none();
  c.intensity = {2, 60s}; // the third restart within a minute escalates
  c.batch_size = 4;
  auto r = keel::pipeline_from(iota(100))
               .map("work",
                    [](int x) {
                      if (x < 10)
                        throw std::runtime_error("boom " + std::to_string(x));
                      return x;
                    })
               .run(sys, c);
  EXPECT_THAT(keel::to_string(r.error), HasSubstr("stage supervisor of run pipeline escalated"))
      << r.summary();
  EXPECT_FALSE(r.cancelled);
  EXPECT_FALSE(r.failed_fast);
  EXPECT_LT(r.outputs.size(), 90u) << "the run ended early";
  EXPECT_EQ(r.counts.total(), r.counts.ended()) << r.summary();
  EXPECT_THAT(r.summary(), HasSubstr(": aborted in"));
}

// -- deadline ---------------------------------------------------------------------------

TEST_F(PipelineDeadline, ASlowRunEndsWithDeadlineExceeded) {
  constexpr int n = 2000;
  std::atomic<bool> saw_cancelled{false};
  std::atomic<bool> had_deadline{true};
  std::atomic<int> progress_calls{0};
  keel::run_config c;
  c.deadline = 50ms;
  c.batch_size = 8;
  // Item 0 fails once and waits 10 s for its retry: the deadline must drop it.
  c.retry = keel::retry_policy{}.with_backoff(10s, 10s);
  c.progress_every = 10ms;
  c.on_progress = [&](const keel::run_progress& p) {
    EXPECT_EQ(p.name, "pipeline");
    EXPECT_LE(p.ended, p.from_source);
    ++progress_calls;
  };
  auto h = keel::pipeline_from(iota(n))
               .map("slow",
                    [&](int x, keel::item_context& ctx) -> keel::expected<int> {
                      if (!ctx.deadline())
                        had_deadline = false;
                      if (x == 0 && ctx.attempt() == 1)
                        return keel::unavailable_error("later");
                      auto until = std::chrono::steady_clock::now() + 2ms;
                      while (std::chrono::steady_clock::now() < until && !ctx.cancelled())
                        std::this_thread::sleep_for(100us);
                      // Past the deadline, the cancellation must become visible.
                      if (ctx.deadline() && std::chrono::steady_clock::now() >= *ctx.deadline())
                        eventually([&] { return ctx.cancelled(); }, 10s);
                      if (ctx.cancelled())
                        saw_cancelled = true;
                      return x;
                    })
               .start(sys, c);
  auto r = finish(h);
  EXPECT_EQ(r.error.code(), code::deadline_exceeded) << r.summary();
  EXPECT_THAT(keel::to_string(r.error), HasSubstr("exceeded its 50ms deadline"));
  EXPECT_TRUE(r.cancelled);
  EXPECT_THAT(r.summary(), HasSubstr(": cancelled in"));
  EXPECT_TRUE(saw_cancelled) << "item_context::cancelled() never turned true";
  EXPECT_TRUE(had_deadline) << "item_context::deadline() was empty";
  ASSERT_FALSE(r.cancelled_items.empty()) << r.summary();
  EXPECT_EQ(r.cancelled_items[0].item, 0u) << "the waiting retry ends as cancelled";
  EXPECT_EQ(r.cancelled_items[0].stage, "slow");
  for (const auto& note : r.cancelled_items)
    ASSERT_EQ(note.reason, r.error) << keel::to_string(note.reason);
  EXPECT_LT(r.counts.succeeded, static_cast<uint64_t>(n));
  EXPECT_FALSE(r.failed_fast);
  EXPECT_GE(progress_calls.load(), 1);
  expect_ended_once(r);
  expect_accounted(r, n);
}

// -- cancellation -----------------------------------------------------------------------

/// Cancels a run from the test thread while its stage waits on item 100;
/// item 50 failed once before and waits (10 s) for its retry.
keel::run_result<int> cancel_mid_run(caf::actor_system& sys, keel::error reason,
                                     std::atomic<bool>& saw_cancel) {
  std::promise<void> reached;
  keel::run_config c;
  c.batch_size = 8;
  c.retry = keel::retry_policy{}.with_backoff(10s, 10s);
  auto h = keel::pipeline_from(iota(1000))
               .map("work",
                    [&](int x, keel::item_context& ctx) -> keel::expected<int> {
                      if (x == 50 && ctx.attempt() == 1)
                        return keel::unavailable_error("later");
                      if (x == 100) {
                        reached.set_value();
                        if (eventually([&] { return ctx.cancelled(); }, 10s))
                          saw_cancel = true;
                      }
                      return x;
                    })
               .start(sys, c);
  EXPECT_EQ(reached.get_future().wait_for(30s), std::future_status::ready);
  std::thread canceller{[&] { h.cancel(reason); }};
  canceller.join();
  EXPECT_TRUE(h.wait_for(30s));
  EXPECT_TRUE(h.done());
  return finish(h);
}

TEST_F(PipelineCancel, CancelFromAnotherThreadMidRun) {
  std::atomic<bool> saw_cancel{false};
  auto r = cancel_mid_run(sys, keel::error{}, saw_cancel);
  EXPECT_EQ(r.error.code(), code::cancelled) << r.summary();
  EXPECT_EQ(r.error.message(), "run cancelled by the caller");
  EXPECT_TRUE(r.cancelled);
  EXPECT_TRUE(saw_cancel);
  ASSERT_FALSE(r.cancelled_items.empty());
  EXPECT_EQ(r.cancelled_items[0].item, 50u) << "the waiting retry ends as cancelled";
  EXPECT_EQ(r.cancelled_items[0].stage, "work");
  for (const auto& note : r.cancelled_items)
    ASSERT_EQ(note.reason, r.error) << keel::to_string(note.reason);
  EXPECT_EQ(std::count(r.outputs.begin(), r.outputs.end(), 50), 0);
  EXPECT_EQ(stats_of(r, "work").retries, 1u);
  expect_ended_once(r);
  expect_accounted(r, 1000);
}

TEST_F(PipelineCancel, CancelWithACustomReason) {
  std::atomic<bool> saw_cancel{false};
  auto reason = keel::aborted_error("operator stop");
  auto r = cancel_mid_run(sys, reason, saw_cancel);
  EXPECT_EQ(r.error, reason) << keel::to_string(r.error);
  EXPECT_TRUE(r.cancelled);
  EXPECT_TRUE(saw_cancel);
  ASSERT_FALSE(r.cancelled_items.empty());
  for (const auto& note : r.cancelled_items)
    ASSERT_EQ(note.reason, reason) << keel::to_string(note.reason);
  EXPECT_THAT(r.summary(), HasSubstr("error: aborted: operator stop"));
  expect_accounted(r, 1000);
}

TEST_F(PipelineCancel, CancelBeforeAnythingWasFed) {
  std::atomic<int> calls{0};
  auto h = keel::pipeline_from_feeder<int>()
               .map("work",
                    [&](int x) {
                      ++calls;
                      return x;
                    })
               .start(sys);
  h.cancel();
  auto r = finish(h);
  EXPECT_EQ(r.error.code(), code::cancelled) << r.summary();
  EXPECT_TRUE(r.cancelled);
  EXPECT_EQ(calls.load(), 0);
  EXPECT_EQ(r.counts.total(), 0u);
  EXPECT_EQ(r.counts.ended(), 0u);
  EXPECT_TRUE(r.outputs.empty());
  auto err = h.feed({1, 2, 3});
  EXPECT_EQ(err.code(), code::failed_precondition) << keel::to_string(err);
  h.close(); // harmless
}

/// A stage function whose copies (one per worker start) wait while `gate`
/// is closed: holds a run before its workers report for duty, that is,
/// before the run is wired and its source reads anything.
struct gate {
  std::atomic<bool> closed{false};
  std::thread::id owner;
};

struct gated_identity {
  std::shared_ptr<gate> g;
  std::shared_ptr<std::atomic<int>> calls;

  gated_identity(std::shared_ptr<gate> gg, std::shared_ptr<std::atomic<int>> cs)
      : g(std::move(gg)), calls(std::move(cs)) {}

  gated_identity(const gated_identity& other) : g(other.g), calls(other.calls) {
    if (g->closed && std::this_thread::get_id() != g->owner)
      eventually([&] { return !g->closed; }, 10s);
  }

  gated_identity(gated_identity&&) = default;

  int operator()(int x) const {
    ++*calls;
    return x;
  }
};

TEST_F(PipelineCancel, CancelBeforeTheSourceReadAnythingCountsEveryInputAsNotStarted) {
  auto g = std::make_shared<gate>();
  auto calls = std::make_shared<std::atomic<int>>(0);
  auto p = keel::pipeline_from(iota(1000)).map("work", gated_identity{g, calls});
  g->owner = std::this_thread::get_id();
  g->closed = true;
  auto h = std::move(p).start(sys);
  h.cancel(); // reaches the coordinator before any worker reported
  g->closed = false;
  auto r = finish(h);
  EXPECT_EQ(r.error.code(), code::cancelled) << r.summary();
  EXPECT_TRUE(r.cancelled);
  EXPECT_EQ(calls->load(), 0);
  EXPECT_EQ(r.counts.from_source, 0u);
  // result.hpp: "not_started: container sources: inputs never read because
  // the run ended first".
  EXPECT_EQ(r.counts.not_started, 1000u) << r.summary();
  expect_accounted(r, 1000);
}

TEST_F(PipelineCancel, OnCompleteWaitForAndCancellingAFinishedRun) {
  std::atomic<bool> open{false};
  std::atomic<int> before{0};
  std::atomic<int> after{0};
  auto h = keel::pipeline_from(iota(10))
               .map("work",
                    [&](int x) {
                      if (x == 0)
                        eventually([&] { return open.load(); }, 10s);
                      return x;
                    })
               .start(sys);
  EXPECT_TRUE(h.coordinator());
  h.on_complete([&] { ++before; });
  h.on_complete([&] { ++before; });
  EXPECT_FALSE(h.wait_for(1ms)) << "the run cannot end while item 0 is held";
  EXPECT_FALSE(h.done());
  EXPECT_EQ(before.load(), 0);
  open = true;
  ASSERT_TRUE(h.wait_for(30s));
  EXPECT_TRUE(h.done());
  EXPECT_TRUE(eventually([&] { return before.load() == 2; })) << before.load();
  auto r = h.wait();
  EXPECT_FALSE(r.error) << r.summary();
  EXPECT_EQ(r.outputs.size(), 10u);
  // Registered after the end: runs at once, on this thread.
  h.on_complete([&] { ++after; });
  EXPECT_EQ(after.load(), 1);
  // Cancelling a finished run changes nothing.
  h.cancel();
  h.cancel(keel::aborted_error("too late"));
  EXPECT_TRUE(h.wait_for(0ns));
  auto again = h.wait();
  EXPECT_FALSE(again.error) << keel::to_string(again.error);
  EXPECT_FALSE(again.cancelled);
  EXPECT_EQ(again.counts.succeeded, 10u);
  EXPECT_TRUE(again.outputs.empty()) << "outputs are handed out once";
  std::this_thread::sleep_for(1ms);
  EXPECT_EQ(before.load(), 2) << "each callback runs once";
  EXPECT_EQ(after.load(), 1);
}

// -- validation -----------------------------------------------------------------------

TEST_F(PipelineValidation, BadConfigurationsFailAtOnceWithoutSpawningActors) {
  std::atomic<int> calls{0};
  auto work = [&](int x) {
    ++calls;
    return x;
  };
  struct bad_case {
    std::string name;
    std::function<std::shared_ptr<keel::run_control>()> start;
    std::string problem;
  };
  auto with = [](auto f) {
    keel::run_config c;
    f(c);
    return c;
  };
  std::vector<bad_case> cases = {
      {"batch_size 0",
       [&] {
         return keel::pipeline_from(iota(10))
             .map("work", work)
             .start(sys, with([](auto& c) { c.batch_size = 0; }))
             .control();
       },
       "run pipeline: batch_size must be at least 1"},
      {"credit 0",
       [&] {
         return keel::pipeline_from(iota(10))
             .map("work", work)
             .start(sys, with([](auto& c) { c.credit = 0; }))
             .control();
       },
       "run pipeline: credit must be at least 1"},
      {"workers 0",
       [&] {
         return keel::pipeline_from(iota(10))
             .map("work", work, keel::stage_options{}.with_workers(0))
             .start(sys)
             .control();
       },
       "stage 0 \"work\": workers must be at least 1"},
      {"duplicate stage names",
       [&] {
         return keel::pipeline_from(iota(10))
             .map("work", work)
             .map("work", work)
             .start(sys)
             .control();
       },
       "stage 1 \"work\": the name is used by stage 0"},
      {"empty stage name",
       [&] { return keel::pipeline_from(iota(10)).map("", work).start(sys).control(); },
       "a stage needs a name"},
      {"retry.max_attempts 0",
       [&] {
         return keel::pipeline_from(iota(10))
             .map("work", work)
             .start(sys, with([](auto& c) { c.retry.max_attempts = 0; }))
             .control();
       },
       "retry.max_attempts must be at least 1"},
      {"override for a missing stage",
       [&] {
         return keel::pipeline_from(iota(10))
             .map("work", work)
             .start(sys, with([](auto& c) { c.stages["nope"].workers = 2; }))
             .control();
       },
       "\"nope\""},
      {"override with workers 0",
       [&] {
         return keel::pipeline_from(iota(10))
             .map("work", work)
             .start(sys, with([](auto& c) { c.stages["work"].workers = 0; }))
             .control();
       },
       "workers must be at least 1"},
  };
  for (auto& bc : cases) {
    SCOPED_TRACE(bc.name);
    auto ctl = bc.start();
    EXPECT_TRUE(ctl->done()) << "the run did not return at once";
    EXPECT_EQ(sys.registry().running(), baseline) << "actors were spawned";
    if (!ctl->done()) { // not rejected: let it end before the next case
      ctl->wait_for(30s);
      continue;
    }
    const auto& r = ctl->report();
    EXPECT_EQ(r.error.code(), code::invalid_argument) << keel::to_string(r.error);
    EXPECT_THAT(keel::to_string(r.error), HasSubstr(bc.problem));
    EXPECT_EQ(r.counts.total(), 0u);
    EXPECT_EQ(calls.load(), 0);
  }
}

// validate() rejects a run whose retry policy allows no attempt at all; a
// stage's own retry policy (with_retry, or a configuration override) must be
// held to the same rule instead of being run.
TEST_F(PipelineValidation, AStageRetryPolicyWithoutAttemptsIsRejected) {
  std::atomic<int> calls{0};
  auto h = keel::pipeline_from(iota(10))
               .map(
                   "work",
                   [&](int x) {
                     ++calls;
                     return x;
                   },
                   keel::stage_options{}.with_retry(keel::retry_policy{}.with_max_attempts(0)))
               .start(sys);
  EXPECT_TRUE(h.done()) << "the run was started";
  auto r = finish(h);
  EXPECT_EQ(r.error.code(), code::invalid_argument) << r.summary();
  EXPECT_THAT(keel::to_string(r.error), HasSubstr("max_attempts must be at least 1"));
  EXPECT_EQ(calls.load(), 0);
}

TEST_F(PipelineValidation, FeedingARunWithoutAFeederFails) {
  auto h = keel::pipeline_from(iota(10)).map("work", [](int x) { return x; }).start(sys);
  auto err = h.feed({1, 2});
  EXPECT_EQ(err.code(), code::failed_precondition) << keel::to_string(err);
  auto r = finish(h);
  EXPECT_EQ(r.outputs.size(), 10u) << "the failed feed did not disturb the run";
}

// -- lifetime -------------------------------------------------------------------------

TEST_F(PipelineLifetime, NoActorOfARunOutlivesIt) {
  {
    auto r =
        keel::pipeline_from(iota(500))
            .map(
                "a", [](int x) { return x; }, keel::stage_options{}.with_workers(3).with_ordered())
            .flat_map("split",
                      [](int x) {
                        return std::vector<int>{x, x};
                      })
            .batch("group", 16, 1ms)
            .sink("store", [](const std::vector<int>&) {})
            .run(sys);
    EXPECT_FALSE(r.error) << r.summary();
  }
  EXPECT_TRUE(eventually([&] { return sys.registry().running() == baseline; }))
      << sys.registry().running() - baseline << " actors still running";
  {
    keel::run_config c;
    c.retry = keel::retry_policy::none();
    auto r = keel::pipeline_from(iota(100))
                 .map(
                     "crash",
                     [](int x) {
                       if (x % 10 == 0)
                         throw std::runtime_error("boom");
                       return x;
                     },
                     keel::stage_options{}.with_workers(2))
                 .run(sys, c);
    EXPECT_EQ(r.dead_letters.size(), 10u) << r.summary();
  }
  EXPECT_TRUE(eventually([&] { return sys.registry().running() == baseline; }))
      << sys.registry().running() - baseline << " actors still running";
}

/// A stage function holding `token`; throws on item 50 when `throws`.
auto holding(std::shared_ptr<int> token, bool throws) {
  return [token = std::move(token), throws](int x) {
    if (throws && x == 50)
      throw std::runtime_error("boom");
    return x + *token;
  };
}

// Once the actor system that ran a pipeline is gone, nothing may hold the
// stage functions (and what they captured) any more: if something does, a
// reference cycle leaks them (and the run's actors) for good.
TEST_F(PipelineLifetime, NothingOfARunLeaksOnceTheActorSystemIsGone) {
  struct shape {
    std::string name;
    keel::stage_options opts;
    bool throws;
  };
  std::vector<shape> shapes = {
      {"one worker", keel::stage_options{}, false},
      {"two unordered workers", keel::stage_options{}.with_workers(2), false},
      {"a worker restarted after a throw", keel::stage_options{}, true},
      {"two ordered workers", keel::stage_options{}.with_workers(2).with_ordered(), false},
  };
  for (const auto& s : shapes) {
    SCOPED_TRACE(s.name);
    auto token = std::make_shared<int>(0);
    std::weak_ptr<int> watch = token;
    {
      keel_test::config local_cfg;
      caf::actor_system local{local_cfg};
      keel::run_config c;
      c.retry = keel::retry_policy::none();
      c.batch_size = 16;
      auto r = keel::pipeline_from(iota(100))
                   .map("work", holding(std::move(token), s.throws), s.opts)
                   .run(local, c);
      EXPECT_EQ(r.outputs.size() + r.dead_letters.size(), 100u) << r.summary();
    }
    EXPECT_TRUE(watch.expired()) << "the stage function is still alive " << watch.use_count()
                                 << " times after the actor system is gone";
  }
}

// docs/pipelines.md: "When a run has returned, none of its actors is
// alive". What a stage function captured (a connection, a file, a buffer)
// must go with them, not linger after run() returned.
TEST_F(PipelineLifetime, StageFunctionsAreReleasedWhenTheRunHasReturned) {
  auto token = std::make_shared<int>(0);
  std::weak_ptr<int> watch = token;
  {
    auto r = keel::pipeline_from(iota(100)).map("work", holding(std::move(token), false)).run(sys);
    EXPECT_EQ(r.outputs.size(), 100u) << r.summary();
  }
  // Far below the stage supervisor's 5 s shutdown timeout.
  EXPECT_TRUE(eventually([&] { return watch.expired(); }, 2s))
      << "the stage function is still alive " << watch.use_count() << " times";
}

} // namespace
