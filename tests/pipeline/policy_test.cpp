// The plain C++ parts of pipelines: rule tables, error policies, retry
// policies and budgets, latency histograms, trace contexts and the report
// summary. No actor system involved.

#include "keel/error.hpp"
#include "keel/pipeline.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <random>
#include <string>
#include <vector>

namespace {

enum class db_errc : uint8_t { connection_lost = 1, constraint = 2 };

} // namespace

template <>
struct keel::error_code_enum<db_errc> {
  static constexpr std::string_view category = "test.pipeline_db";

  static std::string_view name(db_errc e) noexcept {
    return e == db_errc::connection_lost ? "connection_lost" : "constraint";
  }

  static keel::code canonical(db_errc e) noexcept {
    return e == db_errc::connection_lost ? keel::code::unavailable
                                         : keel::code::failed_precondition;
  }
};

namespace {

using namespace std::chrono_literals;
using keel::code;
using keel::error_class;
using ::testing::HasSubstr;

/// Every canonical code but `ok`.
std::vector<code> all_codes() {
  std::vector<code> xs;
  for (uint8_t v = 1; v <= keel::max_canonical_code; ++v)
    xs.push_back(*keel::code_from_value(v));
  return xs;
}

// -- error_rules ----------------------------------------------------------------------

TEST(PipelineErrorRules, FirstMatchingRuleWinsElseTheFallback) {
  keel::error_rules<int> r{0};
  r.on(code::unavailable, 1).on(code::unavailable, 2).on(code::not_found, 3);
  EXPECT_EQ(r(keel::unavailable_error("down")), 1);
  EXPECT_EQ(r(keel::not_found_error("gone")), 3);
  EXPECT_EQ(r(keel::internal_error("bug")), 0);
  EXPECT_EQ(r.match(keel::unavailable_error("down")), 1);
  EXPECT_EQ(r.match(keel::internal_error("bug")), std::nullopt) << "the fallback is no match";
  EXPECT_EQ(r.fallback(), 0);
  r.otherwise(7);
  EXPECT_EQ(r(keel::internal_error("bug")), 7);
}

TEST(PipelineErrorRules, CodeRulesLookAtTheWholeTree) {
  keel::error_rules<int> r{0};
  r.on(code::unavailable, 1);
  EXPECT_EQ(r(keel::wrap(keel::unavailable_error("down"), "calling the db")), 1);
  EXPECT_EQ(r(keel::join(keel::invalid_argument_error("a"), keel::unavailable_error("b"))), 1);
  EXPECT_EQ(r(keel::wrap(keel::unavailable_error("down"), code::internal, "reclassified")), 1);
  EXPECT_EQ(r(keel::error{}), 0);
}

TEST(PipelineErrorRules, ApplicationCodesCategoriesDetailsAndPredicates) {
  keel::error_rules<std::string> r{"none"};
  r.on(db_errc::constraint, "constraint")
      .on_category("test.pipeline_db", "db")
      .on_detail<keel::stage_info>("staged")
      .on_if([](const keel::error& e) { return e.message() == "magic"; }, "magic");
  EXPECT_EQ(r(keel::make_error(db_errc::constraint, "dup")), "constraint");
  EXPECT_EQ(r(keel::make_error(db_errc::connection_lost, "socket")), "db");
  EXPECT_EQ(r(keel::wrap(keel::make_error(db_errc::connection_lost, "socket"), "query")), "db");
  EXPECT_EQ(r(keel::with_detail(keel::internal_error("x"), keel::stage_info{"parse", "7", 1})),
            "staged");
  EXPECT_EQ(r(keel::internal_error("magic")), "magic");
  EXPECT_EQ(r(keel::internal_error("plain")), "none");
  // A canonical error with the same canonical code is not the application code.
  EXPECT_EQ(r(keel::failed_precondition_error("dup")), "none");
}

TEST(PipelineErrorRules, DefaultConstructedHasNoAnswerAndCopiesAreIndependent) {
  keel::error_rules<int> empty;
  EXPECT_FALSE(empty.defined());
  EXPECT_EQ(empty(keel::internal_error("x")), 0);
  EXPECT_EQ(empty.fallback(), std::nullopt);

  keel::error_rules<int> a{1};
  a.on(code::unavailable, 2);
  auto b = a;
  b.on(code::internal, 3).otherwise(4);
  EXPECT_EQ(a(keel::internal_error("x")), 1) << "a rule added to a copy leaked into the original";
  EXPECT_EQ(b(keel::internal_error("x")), 3);
  EXPECT_EQ(b(keel::unavailable_error("x")), 2);
  EXPECT_EQ(a(keel::not_found_error("x")), 1);
  EXPECT_EQ(b(keel::not_found_error("x")), 4);
}

TEST(PipelineErrorRules, PrependPutsTheOtherTablesRulesFirst) {
  keel::error_rules<int> base{0};
  base.on(code::internal, 1);
  keel::error_rules<int> first{9}; // its fallback is ignored
  first.on(code::internal, 2);
  base.prepend(first);
  EXPECT_EQ(base(keel::internal_error("x")), 2);
  EXPECT_EQ(base(keel::not_found_error("x")), 0);
  base.prepend(base); // prepending itself doubles its rules, harmlessly
  EXPECT_EQ(base(keel::internal_error("x")), 2);
}

// -- error_policy ---------------------------------------------------------------------

TEST(PipelineErrorPolicy, FailFastAndCollectAllClassifyEveryError) {
  auto ff = keel::error_policy::fail_fast();
  auto ca = keel::error_policy::collect_all();
  EXPECT_EQ(ff.mode(), keel::policy_mode::fail_fast);
  EXPECT_EQ(ca.mode(), keel::policy_mode::collect_all);
  EXPECT_EQ(keel::error_policy{}.mode(), keel::policy_mode::collect_all);
  for (auto c : all_codes()) {
    auto err = keel::make_error(c, "x");
    EXPECT_EQ(ff.classify(err), error_class::critical) << c;
    EXPECT_EQ(ca.classify(err), error_class::item) << c;
    EXPECT_EQ(keel::error_policy{}.classify(err), error_class::item) << c;
    // The mode's fallback is not an explicit rule: a stage policy made of a
    // mode alone falls back to the run's policy for every error.
    EXPECT_EQ(ff.match(err), std::nullopt) << c;
    EXPECT_EQ(ca.match(err), std::nullopt) << c;
  }
}

TEST(PipelineErrorPolicy, HybridDefaults) {
  auto h = keel::error_policy::hybrid();
  EXPECT_EQ(h.mode(), keel::policy_mode::hybrid);
  for (auto c : all_codes()) {
    auto err = keel::make_error(c, "x");
    error_class want = error_class::item;
    if (c == code::internal || c == code::data_loss || c == code::failed_precondition
        || c == code::permission_denied || c == code::unauthenticated)
      want = error_class::critical;
    else if (c == code::panic)
      want = error_class::poison;
    EXPECT_EQ(h.classify(err), want) << c;
    // The mode's table is not a rule added with on*: a stage override made
    // of hybrid() alone matches nothing and falls back to the run's policy.
    EXPECT_EQ(h.match(err), std::nullopt) << c;
  }
  // An application code is classified by its canonical code.
  EXPECT_EQ(h.classify(keel::make_error(db_errc::constraint, "dup")), error_class::critical);
  EXPECT_EQ(h.classify(keel::make_error(db_errc::connection_lost, "down")), error_class::item);
}

TEST(PipelineErrorPolicy, RulesRefineTheModesFallback) {
  auto p =
      keel::error_policy::hybrid()
          .on(code::already_exists, error_class::skip)
          .on_category("test.pipeline_db", error_class::poison)
          .on_if([](const keel::error& e) { return e.message() == "odd"; }, error_class::critical);
  EXPECT_EQ(p.classify(keel::already_exists_error("dup")), error_class::skip);
  EXPECT_EQ(p.classify(keel::make_error(db_errc::connection_lost, "x")), error_class::poison);
  EXPECT_EQ(p.classify(keel::not_found_error("odd")), error_class::critical);
  EXPECT_EQ(p.classify(keel::not_found_error("even")), error_class::item);
  EXPECT_EQ(p.match(keel::already_exists_error("dup")), error_class::skip);
  // Copies are independent.
  auto q = p;
  q.on(code::not_found, error_class::skip);
  EXPECT_EQ(p.classify(keel::not_found_error("even")), error_class::item);
  EXPECT_EQ(q.classify(keel::not_found_error("even")), error_class::skip);
}

// policy.hpp: "The mode gives the fallback class; rules added with `on*` take
// precedence, first match wins"; docs/pipelines.md: "Rules ... are tried
// first". A rule added to hybrid() for a code hybrid classifies itself must
// therefore win over hybrid's default for that code.
TEST(PipelineErrorPolicy, RulesAddedToHybridTakePrecedenceOverItsDefaults) {
  auto p = keel::error_policy::hybrid()
               .on(code::internal, error_class::item)
               .on(code::panic, error_class::skip);
  EXPECT_EQ(p.classify(keel::internal_error("x")), error_class::item);
  EXPECT_EQ(p.classify(keel::panic_error("x")), error_class::skip);
}

TEST(PipelineErrorPolicy, PrependedRulesComeBeforeTheModesDefaults) {
  auto p = keel::error_policy::hybrid().prepend(
      keel::error_policy::fail_fast().on(code::internal, error_class::item));
  EXPECT_EQ(p.mode(), keel::policy_mode::hybrid) << "prepend keeps this policy's mode";
  EXPECT_EQ(p.classify(keel::internal_error("x")), error_class::item);
  EXPECT_EQ(p.classify(keel::data_loss_error("x")), error_class::critical);
  EXPECT_EQ(p.classify(keel::not_found_error("x")), error_class::item)
      << "the prepended policy's fail-fast fallback must be ignored";
}

TEST(PipelineErrorPolicy, EnumNames) {
  EXPECT_EQ(keel::to_string(error_class::item), "item");
  EXPECT_EQ(keel::to_string(error_class::critical), "critical");
  EXPECT_EQ(keel::to_string(error_class::poison), "poison");
  EXPECT_EQ(keel::to_string(error_class::skip), "skip");
  EXPECT_EQ(keel::to_string(keel::policy_mode::fail_fast), "fail_fast");
  EXPECT_EQ(keel::to_string(keel::policy_mode::collect_all), "collect_all");
  EXPECT_EQ(keel::to_string(keel::policy_mode::hybrid), "hybrid");
  EXPECT_EQ(keel::to_string(keel::stage_kind::map), "map");
  EXPECT_EQ(keel::to_string(keel::stage_kind::filter), "filter");
  EXPECT_EQ(keel::to_string(keel::stage_kind::flat_map), "flat_map");
  EXPECT_EQ(keel::to_string(keel::stage_kind::group), "batch");
  EXPECT_EQ(keel::to_string(keel::stage_kind::sink), "sink");
}

// -- retry_policy -----------------------------------------------------------------------

TEST(PipelineRetryPolicy, DefaultRetryableCodes) {
  keel::retry_policy p;
  EXPECT_EQ(p.max_attempts, 3u);
  for (auto c : all_codes()) {
    bool want = c == code::unavailable || c == code::resource_exhausted
                || c == code::deadline_exceeded || c == code::aborted || c == code::panic;
    EXPECT_EQ(p.retryable_error(keel::make_error(c, "x")), want) << c;
    // What the runtime adds (attribution, a context message) keeps the answer.
    EXPECT_EQ(p.retryable_error(keel::with_detail(keel::wrap(keel::make_error(c, "x"), "stage s"),
                                                  keel::stage_info{"s", "1", 1})),
              want)
        << c;
    // No retries at all with one attempt.
    EXPECT_FALSE(keel::retry_policy::none().retryable_error(keel::make_error(c, "x"))) << c;
  }
  EXPECT_FALSE(p.retryable_error(keel::error{}));
  // Application codes count by their canonical code.
  EXPECT_TRUE(p.retryable_error(keel::make_error(db_errc::connection_lost, "socket")));
  EXPECT_FALSE(p.retryable_error(keel::make_error(db_errc::constraint, "dup")));
}

TEST(PipelineRetryPolicy, CustomRetryableList) {
  auto p = keel::retry_policy{}.with_retryable({code::not_found, code::already_exists});
  EXPECT_TRUE(p.retryable_error(keel::not_found_error("x")));
  EXPECT_TRUE(p.retryable_error(keel::already_exists_error("x")));
  EXPECT_TRUE(p.retryable_error(keel::wrap(keel::not_found_error("x"), "lookup")));
  EXPECT_FALSE(p.retryable_error(keel::unavailable_error("x"))) << "the list replaces the defaults";
  EXPECT_FALSE(p.retryable_error(keel::panic_error("x")));
  p.max_attempts = 1;
  EXPECT_FALSE(p.retryable_error(keel::not_found_error("x")));
}

// docs/pipelines.md: "retryable | empty = unavailable, resource_exhausted,
// deadline_exceeded, aborted, panic". Spelling that set out must not change
// which errors are retried.
TEST(PipelineRetryPolicy, TheDefaultSetSpelledOutBehavesLikeTheDefault) {
  keel::retry_policy implicit;
  auto explicit_list =
      keel::retry_policy{}.with_retryable({code::unavailable, code::resource_exhausted,
                                           code::deadline_exceeded, code::aborted, code::panic});
  std::vector<keel::error> errs = {
      keel::unavailable_error("x"),
      keel::invalid_argument_error("x"),
      keel::wrap(keel::aborted_error("x"), "context"),
      // Reclassified at a boundary: no longer an outage.
      keel::wrap(keel::unavailable_error("db down"), code::internal, "schema broken"),
      // A join has the code of its first child.
      keel::join(keel::invalid_argument_error("a"), keel::unavailable_error("b")),
  };
  for (const auto& err : errs)
    EXPECT_EQ(implicit.retryable_error(err), explicit_list.retryable_error(err))
        << keel::to_string(err);
}

TEST(PipelineRetryPolicy, DelayGrowsExponentiallyUpToTheCap) {
  keel::retry_policy p;
  p.jitter = 0;
  p.with_backoff(1ms, 10ms);
  std::mt19937_64 rng{1};
  EXPECT_EQ(p.delay(2, rng), 1ms);
  EXPECT_EQ(p.delay(3, rng), 2ms);
  EXPECT_EQ(p.delay(4, rng), 4ms);
  EXPECT_EQ(p.delay(5, rng), 8ms);
  EXPECT_EQ(p.delay(6, rng), 10ms);
  EXPECT_EQ(p.delay(1000, rng), 10ms);
  EXPECT_EQ(p.delay(UINT32_MAX, rng), 10ms);
  EXPECT_EQ(p.delay(1, rng), 1ms) << "attempt 1 never waits longer than the first retry";
  p.multiplier = 0.5; // shrinking delays make no sense: taken as 1
  EXPECT_EQ(p.delay(5, rng), 1ms);
  p.multiplier = 3;
  EXPECT_EQ(p.delay(4, rng), 9ms);
}

TEST(PipelineRetryPolicy, JitterShortensTheDelayByAtMostItsShare) {
  keel::retry_policy p;
  p.with_backoff(10ms, 10ms);
  p.jitter = 0.2;
  std::mt19937_64 rng{7};
  auto lo = std::chrono::nanoseconds::max();
  auto hi = std::chrono::nanoseconds::zero();
  for (int i = 0; i < 1000; ++i) {
    auto d = p.delay(2, rng);
    ASSERT_GE(d, 8ms);
    ASSERT_LE(d, 10ms);
    lo = std::min(lo, d);
    hi = std::max(hi, d);
  }
  // Spread over the allowed range (seeded, so this is a fixed sequence).
  EXPECT_LT(lo, 8200us);
  EXPECT_GT(hi, 9800us);
  p.jitter = 5; // more than all of it: clamped to 1
  for (int i = 0; i < 1000; ++i) {
    auto d = p.delay(2, rng);
    ASSERT_GE(d, 0ns);
    ASSERT_LE(d, 10ms);
  }
}

TEST(PipelineRetryPolicy, SeededDelaysAreReproducible) {
  keel::retry_policy p;
  std::mt19937_64 a{42}, b{42}, c{43};
  std::vector<std::chrono::nanoseconds> xs, ys, zs;
  for (uint32_t i = 0; i < 100; ++i) {
    xs.push_back(p.delay(2 + i % 5, a));
    ys.push_back(p.delay(2 + i % 5, b));
    zs.push_back(p.delay(2 + i % 5, c));
  }
  EXPECT_EQ(xs, ys);
  EXPECT_NE(xs, zs);
}

// A cap of nanoseconds::max() reads as "no cap"; the delay must still be a
// valid, non-negative duration (the double -> int64 conversion must not
// overflow).
TEST(PipelineRetryPolicy, UncappedBackoffStaysPositive) {
  keel::retry_policy p;
  p.jitter = 0;
  p.with_backoff(1ms, std::chrono::nanoseconds::max());
  std::mt19937_64 rng{1};
  for (uint32_t attempt : {40u, 60u, 100u, 1000u}) {
    auto d = p.delay(attempt, rng);
    EXPECT_GT(d, 24h) << "attempt " << attempt << ": " << d.count() << "ns";
  }
}

// -- retry_budget ---------------------------------------------------------------------

TEST(PipelineRetryBudget, Allows) {
  keel::retry_budget fixed{0.0, 3};
  EXPECT_TRUE(fixed.allows(0, 0));
  EXPECT_TRUE(fixed.allows(2, 1'000'000));
  EXPECT_FALSE(fixed.allows(3, 0));
  EXPECT_FALSE(fixed.allows(3, 1'000'000));

  keel::retry_budget ratio{0.5, 0};
  EXPECT_FALSE(ratio.allows(0, 0));
  EXPECT_TRUE(ratio.allows(0, 1)); // 0 < 0.5
  EXPECT_FALSE(ratio.allows(1, 1));
  EXPECT_TRUE(ratio.allows(0, 2));
  EXPECT_TRUE(ratio.allows(4, 10));
  EXPECT_FALSE(ratio.allows(5, 10));

  keel::retry_budget defaults;
  EXPECT_TRUE(defaults.allows(99, 0));
  EXPECT_FALSE(defaults.allows(100, 0));
  EXPECT_TRUE(defaults.allows(119, 100));
  EXPECT_FALSE(defaults.allows(120, 100));

  auto unlimited = keel::retry_budget::unlimited();
  EXPECT_TRUE(unlimited.allows(1'000'000'000'000ULL, 0));
}

// -- latency_histogram ------------------------------------------------------------------

TEST(PipelineLatencyHistogram, EmptyAndSmallValues) {
  keel::latency_histogram h;
  EXPECT_EQ(h.count(), 0u);
  EXPECT_EQ(h.percentile(0.5), 0ns);
  EXPECT_EQ(h.max(), 0ns);
  h.record(3ns);
  EXPECT_EQ(h.count(), 1u);
  EXPECT_EQ(h.percentile(0.5), 3ns);
  EXPECT_EQ(h.max(), 3ns);
  h.record(-5ns); // clock hiccups count as zero
  EXPECT_EQ(h.count(), 2u);
  EXPECT_LE(h.percentile(0.0), 1ns); // the (exclusive) upper bound of the zero bucket
  EXPECT_EQ(h.percentile(1.0), 3ns);
  EXPECT_EQ(h.percentile(-1), h.percentile(0.0)) << "q is clamped to 0..1";
  EXPECT_EQ(h.percentile(2), 3ns);
}

TEST(PipelineLatencyHistogram, PercentilesAreBucketUpperBoundsWithin25Percent) {
  // For one value v and a larger one, the median is the upper bound of v's
  // bucket: at least v and at most 1.25 v (4 sub-buckets per power of two).
  for (int64_t v = 4; v < 4'000'000'000LL; v = v * 3 / 2 + 1) {
    keel::latency_histogram h;
    h.record(std::chrono::nanoseconds{v});
    h.record(std::chrono::nanoseconds{v * 10});
    auto p = h.percentile(0.5).count();
    ASSERT_GE(p, v) << v;
    ASSERT_LE(p, v + v / 4 + 1) << v;
    ASSERT_EQ(h.percentile(1.0).count(), v * 10) << "the top quantile is capped at the max";
  }
}

TEST(PipelineLatencyHistogram, PercentilesOfAUniformSample) {
  keel::latency_histogram h;
  for (int i = 1; i <= 100; ++i)
    h.record(std::chrono::microseconds(i));
  EXPECT_EQ(h.count(), 100u);
  EXPECT_EQ(h.max(), 100us);
  auto p50 = h.percentile(0.5);
  EXPECT_GE(p50, 50us);
  EXPECT_LE(p50, 62500ns);
  auto p99 = h.percentile(0.99);
  EXPECT_GE(p99, 99us);
  EXPECT_LE(p99, 100us);
  EXPECT_LE(h.percentile(0.01), 1250ns);
  EXPECT_LE(p50, p99);
}

TEST(PipelineLatencyHistogram, MergeEqualsRecordingEverythingInOne) {
  keel::latency_histogram a, b, all;
  std::mt19937_64 rng{3};
  for (int i = 0; i < 1000; ++i) {
    auto d = std::chrono::nanoseconds{static_cast<int64_t>(rng() % 10'000'000)};
    (i % 3 == 0 ? a : b).record(d);
    all.record(d);
  }
  keel::latency_histogram merged = a;
  merged.merge(b);
  EXPECT_EQ(merged.count(), 1000u);
  EXPECT_EQ(merged.max(), all.max());
  for (double q : {0.0, 0.1, 0.5, 0.9, 0.99, 0.999, 1.0})
    EXPECT_EQ(merged.percentile(q), all.percentile(q)) << q;
  merged.merge(keel::latency_histogram{});
  EXPECT_EQ(merged.count(), 1000u);
}

// -- trace_context ------------------------------------------------------------------------

constexpr const char* w3c_example = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

TEST(PipelineTraceContext, DefaultIsInvalid) {
  keel::trace_context t;
  EXPECT_FALSE(t.valid());
  EXPECT_EQ(t.traceparent(), "00-00000000000000000000000000000000-0000000000000000-00");
}

TEST(PipelineTraceContext, ParsesTheW3CExampleAndRoundTrips) {
  auto t = keel::trace_context::parse(w3c_example);
  ASSERT_TRUE(t.has_value()) << keel::to_string(t.error());
  EXPECT_TRUE(t->valid());
  EXPECT_EQ(t->trace_id[0], 0x4b);
  EXPECT_EQ(t->trace_id[15], 0x36);
  EXPECT_EQ(t->span_id, 0x00f067aa0ba902b7ULL);
  EXPECT_EQ(t->parent_span_id, 0u);
  EXPECT_EQ(t->flags, 1);
  EXPECT_EQ(t->traceparent(), w3c_example);

  keel::trace_context u;
  u.trace_id[15] = 1;
  u.span_id = 0x8000000000000001ULL; // top bit set: big-endian, unsigned
  u.flags = 0;
  auto back = keel::trace_context::parse(u.traceparent());
  ASSERT_TRUE(back.has_value()) << keel::to_string(back.error());
  EXPECT_EQ(*back, u);
  EXPECT_EQ(u.traceparent(), "00-00000000000000000000000000000001-8000000000000001-00");
}

TEST(PipelineTraceContext, ChildKeepsTheTraceAndLinksToItsParent) {
  auto t = *keel::trace_context::parse(w3c_example);
  auto c = t.child(0x1234);
  EXPECT_EQ(c.trace_id, t.trace_id);
  EXPECT_EQ(c.flags, t.flags);
  EXPECT_EQ(c.span_id, 0x1234u);
  EXPECT_EQ(c.parent_span_id, t.span_id);
  EXPECT_EQ(c.traceparent(), "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000001234-01");
}

TEST(PipelineTraceContext, ParseErrorsNameTheProblem) {
  struct bad_case {
    std::string input;
    std::string problem;
  };
  const std::string ok = w3c_example;
  std::vector<bad_case> cases = {
      {"", "55 characters"},
      {ok.substr(0, 54), "55 characters"},
      {ok + "-00", "55 characters"},
      {"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "55 characters"},
      {"01" + ok.substr(2), "unsupported version \"01\""},
      {"ff" + ok.substr(2), "unsupported version \"ff\""},
      {"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", "lowercase hexadecimal"},
      {"00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01", "lowercase hexadecimal"},
      {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x", "lowercase hexadecimal"},
      {"00-00000000000000000000000000000000-00f067aa0ba902b7-01", "trace id is all zero"},
      {"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", "span id is all zero"},
  };
  for (const auto& c : cases) {
    auto t = keel::trace_context::parse(c.input);
    ASSERT_FALSE(t.has_value()) << "accepted \"" << c.input << "\"";
    EXPECT_EQ(t.error().code(), code::invalid_argument) << c.input;
    EXPECT_THAT(keel::to_string(t.error()), HasSubstr(c.problem)) << c.input;
    EXPECT_THAT(keel::to_string(t.error()), HasSubstr("traceparent")) << c.input;
  }
}

// -- run_report::summary ----------------------------------------------------------------

keel::run_report sample_report() {
  keel::run_report r;
  r.name = "etl";
  r.duration = 1500us;
  r.counts.from_source = 10;
  r.counts.created = 2;
  r.counts.succeeded = 7;
  r.counts.failed = 2;
  r.counts.dead_lettered = 1;
  r.counts.skipped = 1;
  r.counts.consumed = 1;
  keel::stage_stats s;
  s.name = "a-rather-long-stage-name";
  s.workers = 3;
  s.in = 10;
  s.out = 9;
  s.retries = 4;
  s.restarts = 2;
  s.peak_queue = 17;
  s.errors_by_code = {{"unavailable", 5}, {"panic", 1}};
  r.stages.push_back(s);
  return r;
}

TEST(PipelineRunReport, SummaryOfASuccessfulRun) {
  auto r = sample_report();
  auto text = r.summary();
  EXPECT_THAT(text, HasSubstr("run etl: ok in 1.5ms"));
  EXPECT_THAT(text, HasSubstr("items: 12 (10 from the source, 2 made by stages): 7 succeeded, "
                              "2 failed, 1 dead-lettered, 1 skipped, 0 filtered, 0 cancelled, "
                              "1 consumed"));
  EXPECT_THAT(text, HasSubstr("a-rather-long-st ")) << "stage names are cut at 16 characters";
  EXPECT_THAT(text, ::testing::Not(HasSubstr("LOST")));
  EXPECT_THAT(text, ::testing::Not(HasSubstr("not started")));
  EXPECT_THAT(text, ::testing::Not(HasSubstr("error:")));
  // The stage row: workers, in, out, errors (all codes), retries, restarts, ..., peak queue.
  EXPECT_THAT(text, ::testing::ContainsRegex("a-rather-long-st +3 +10 +9 +6 +4 +2 .* 17\n"));
}

TEST(PipelineRunReport, SummaryOutcomes) {
  auto r = sample_report();
  r.error = keel::invalid_argument_error("bad row");
  auto with_errors = r.summary();
  EXPECT_THAT(with_errors, HasSubstr("run etl: completed with item errors in"));
  EXPECT_THAT(with_errors, HasSubstr("  error: invalid_argument: bad row\n"));
  r.failed_fast = true;
  EXPECT_THAT(r.summary(), HasSubstr("run etl: failed fast in"));
  r.failed_fast = false;
  r.aborted = true;
  r.counts.lost = 3;
  r.counts.not_started = 5;
  auto aborted = r.summary();
  EXPECT_THAT(aborted, HasSubstr("run etl: aborted in"));
  EXPECT_THAT(aborted, HasSubstr(", 3 LOST"));
  EXPECT_THAT(aborted, HasSubstr("; 5 inputs not started"));
  r.aborted = false;
  r.cancelled = true;
  r.error = keel::cancelled_error("stop");
  EXPECT_THAT(r.summary(), HasSubstr("run etl: cancelled in"));
  EXPECT_THAT(r.summary(), HasSubstr("error: cancelled: stop"));
}

} // namespace
