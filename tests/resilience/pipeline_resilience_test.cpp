// Resilience in pipelines: stages behind a breaker, a bulkhead and a rate
// limiter (shared by workers and stages), their configuration from JSON, a
// run against a flaky dependency, and dead letters persisted into the
// journal's dead-letter queue and replayed end to end.
//
// Timing never decides an assertion: the breaker and the limiters read fake
// clocks, and runs are bounded by hang guards only.

#include "../pipeline/helpers.hpp"

#include "keel/pipeline/config.hpp"
#include "keel/pipeline/dead_letters.hpp"
#include "keel/pipeline/resilience.hpp"
#include "keel/resilience/codes.hpp"
#include "keel/resilience/dlq.hpp"
#include "keel/resilience/fault.hpp"
#include "keel/store/memory_journal.hpp"
#include "keel/store/sqlite_journal.hpp"
#include "keel/testing/matchers.hpp"

#include <boost/json.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <unistd.h>
#include <vector>

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using keel::resilience_code;
using keel::testing::FailedWith;
using keel::testing::IsOk;
using ::testing::HasSubstr;
using steady = std::chrono::steady_clock;

/// A clock that moves 1 ms every time it is read: the breaker's open
/// duration passes after a number of calls, not of real milliseconds.
struct ticking_clock {
  std::shared_ptr<std::atomic<int64_t>> ns = std::make_shared<std::atomic<int64_t>>(0);

  steady::time_point operator()() const {
    return steady::time_point{std::chrono::nanoseconds{ns->fetch_add(1'000'000) + 1'000'000}};
  }
};

/// A clock that stands still (token buckets never refill).
steady::time_point frozen_clock() {
  return steady::time_point{std::chrono::seconds{1}};
}

/// Records a breaker's state changes.
struct transitions {
  std::mutex mtx;
  std::vector<keel::state_change> seen;

  void listen(keel::circuit_breaker& b) {
    b.on_state_change([this](const keel::state_change& c) {
      std::lock_guard guard{mtx};
      seen.push_back(c);
    });
  }

  /// The changes in sequence order.
  std::vector<std::pair<keel::breaker_state, keel::breaker_state>> path() {
    std::lock_guard guard{mtx};
    auto xs = seen;
    std::sort(xs.begin(), xs.end(), [](auto& a, auto& b) { return a.sequence < b.sequence; });
    std::vector<std::pair<keel::breaker_state, keel::breaker_state>> result;
    for (auto& x : xs)
      result.emplace_back(x.from, x.to);
    return result;
  }
};

bool has_transition(const std::vector<std::pair<keel::breaker_state, keel::breaker_state>>& xs,
                    keel::breaker_state from, keel::breaker_state to) {
  return std::find(xs.begin(), xs.end(), std::make_pair(from, to)) != xs.end();
}

class PipelineResilience : public keel_test::pipeline_test {};

// -- a run against a flaky dependency ---------------------------------------------

TEST_F(PipelineResilience, FlakyDependencyOpensTheBreakerWhichClosesOnRecovery) {
  constexpr int n = 200;
  // Fault injection: the payment service is down for its first 8 calls
  // (injected_fault, canonical unavailable), then recovers. Orders 0, 50,
  // 100 and 150 are malformed: the service rejects them whatever its health
  // (invalid_argument, which the breaker does not count as a failure).
  keel::fault_config fc;
  fc.seed = 7;
  keel::fault_rule outage;
  outage.name = "payments-outage";
  outage.max_hits = 8;
  fc.rules.push_back(outage);
  keel::fault_rule malformed;
  malformed.name = "malformed-orders";
  malformed.keys = {"0", "50", "100", "150"};
  malformed.code = keel::code::invalid_argument;
  fc.rules.push_back(malformed);
  keel::fault_injector faults{fc};
  auto service = faults.wrap([](const int& x) -> keel::expected<int> { return x * 10; },
                             [](const int& x) { return std::to_string(x); });
  auto charge = [service](const int& x) mutable { return service(x); };
  keel::stage_resilience res;
  res.breaker = keel::breaker_config{};
  res.breaker->consecutive_failures = 3;
  res.breaker->open_duration = 20ms; // 20 reads of the ticking clock
  res.breaker->permitted_calls_in_half_open = 2;
  res.breaker->max_wait_in_half_open = 10s; // never reached here
  res.breaker->clock = ticking_clock{};
  res.retry = keel::retry_policy{}.with_max_attempts(3).with_backoff(100us, 1ms);
  auto guards = keel::make_stage_guards(res, "charge");
  ASSERT_THAT(guards, IsOk());
  ASSERT_TRUE(guards->breaker);
  EXPECT_EQ(guards->breaker->name(), "charge") << "named after the stage";
  transitions log;
  log.listen(*guards->breaker);

  auto journal = keel::store::make_memory_journal();
  keel::dead_letter_queue dlq{journal, "payments"};
  keel::dead_letter_codec codec;
  codec.add<int>();
  auto writer = std::make_shared<keel::dead_letter_writer>(dlq, codec);
  keel::run_config cfg;
  cfg.name = "payments";
  cfg.policy =
      keel::error_policy::hybrid().on(keel::code::invalid_argument, keel::error_class::poison);
  cfg.budget = keel::retry_budget::unlimited();
  cfg.on_dead_letter = writer->callback();
  auto r = keel::pipeline_from(keel_test::iota(n))
               .map("charge", keel::guarded(charge, *guards), res.options())
               .start(sys, cfg);
  auto result = keel_test::finish(r);

  // Nothing lost: every input ended exactly once.
  keel_test::expect_accounted(result, n);
  EXPECT_EQ(result.outputs.size() + result.counts.failed + result.counts.dead_lettered,
            static_cast<uint64_t>(n))
      << "every item succeeded (possibly after retries), failed or was dead-lettered\n"
      << result.summary();
  // The breaker opened, refused calls without making them, half-opened and
  // closed once the service was back.
  auto path = log.path();
  EXPECT_TRUE(has_transition(path, keel::breaker_state::closed, keel::breaker_state::open));
  EXPECT_TRUE(has_transition(path, keel::breaker_state::open, keel::breaker_state::half_open));
  EXPECT_TRUE(has_transition(path, keel::breaker_state::half_open, keel::breaker_state::closed));
  EXPECT_EQ(guards->breaker->state(), keel::breaker_state::closed);
  auto m = guards->breaker->metrics();
  EXPECT_GT(m.not_permitted_calls, 0u) << "calls failed fast while open";
  const auto& st = result.stages.at(0);
  EXPECT_GT(st.retries, 0u);
  EXPECT_EQ(faults.calls() + m.not_permitted_calls, st.in + st.retries)
      << "every attempt either called the service or was refused by the breaker";
  // Failed items carry a clear error: the service's or the open breaker's.
  EXPECT_EQ(faults.injected("payments-outage"), 8u);
  for (const auto& f : result.failures) {
    EXPECT_TRUE(keel::is(f.error, keel::code::unavailable)) << f.error;
    EXPECT_TRUE(keel::is(f.error, resilience_code::circuit_open)
                || keel::is(f.error, resilience_code::injected_fault))
        << f.error;
  }
  // The malformed orders are in the persistent dead-letter queue, with their
  // payload, stage and error.
  EXPECT_FALSE(writer->error()) << writer->error();
  EXPECT_EQ(writer->written(), result.dead_letters.size());
  auto entries = dlq.list();
  ASSERT_THAT(entries, IsOk());
  ASSERT_EQ(entries->size(), result.counts.dead_lettered);
  // 0, 50, 100, 150 when the service saw them (0 is tried while the service
  // is down; the others may be refused by the open breaker on every attempt).
  EXPECT_GE(entries->size(), 1u);
  for (const auto& e : *entries) {
    EXPECT_EQ(e.source, "charge");
    EXPECT_TRUE(keel::is(e.failure, keel::code::invalid_argument)) << e.failure;
    EXPECT_EQ(std::stoi(e.payload) % 50, 0) << e.payload;
    EXPECT_EQ(e.key, e.payload) << "keyed by origin, which is the input's position";
  }
}

// -- dead letters persisted, then replayed ----------------------------------------

struct order {
  int id = 0;
  std::string customer;
};

void tag_invoke(boost::json::value_from_tag, boost::json::value& v, const order& o) {
  v = {{"id", o.id}, {"customer", o.customer}};
}

order tag_invoke(boost::json::value_to_tag<order>, const boost::json::value& v) {
  const auto& o = v.as_object();
  return {static_cast<int>(o.at("id").as_int64()), std::string{o.at("customer").as_string()}};
}

TEST_F(PipelineResilience, DeadLettersPersistAndReplayIntoAFixedConsumer) {
  std::error_code ec;
  auto dir = fs::temp_directory_path() / ("keel-dlq-e2e-" + std::to_string(::getpid()));
  fs::remove_all(dir, ec);
  fs::create_directories(dir);
  auto path = (dir / "orders.journal").string();
  keel::store::sqlite_options opts;
  opts.level = keel::store::durability::off;
  std::vector<order> orders;
  for (int i = 0; i < 20; ++i)
    orders.push_back({i, i % 2 == 0 ? "acme" : "globex"});
  {
    // The consumer rejects orders of globex (its account is locked): they
    // are poison and end in the run's dead letters, persisted after the run.
    auto journal = keel::store::open_sqlite_journal(path, opts);
    ASSERT_THAT(journal, IsOk());
    keel::dead_letter_queue dlq{*journal, "orders"};
    keel::run_config cfg;
    cfg.policy =
        keel::error_policy::hybrid().on(keel::code::failed_precondition, keel::error_class::poison);
    auto result = keel::pipeline_from(orders)
                      .sink("book",
                            [](const order& o) -> keel::expected<void> {
                              if (o.customer == "globex")
                                return keel::failed_precondition_error("account globex locked");
                              return {};
                            })
                      .run(sys, cfg);
    keel_test::expect_accounted(result, orders.size());
    EXPECT_EQ(result.counts.succeeded, 10u);
    ASSERT_EQ(result.counts.dead_lettered, 10u);
    keel::dead_letter_codec codec;
    codec.add<order>([](const order& o) { return boost::json::value_from(o); },
                     [](const order& o) { return o.customer; }); // order is kept per customer
    auto n = keel::persist_dead_letters(result, dlq, codec);
    ASSERT_THAT(n, IsOk());
    EXPECT_EQ(*n, 10u);
  }
  // Later, in another process: the account is unlocked; replay into the
  // consumer, which deduplicates by message id.
  auto journal = keel::store::open_sqlite_journal(path, opts);
  ASSERT_THAT(journal, IsOk());
  keel::dead_letter_queue dlq{*journal, "orders"};
  auto entries = dlq.list({.key = "globex"});
  ASSERT_THAT(entries, IsOk());
  ASSERT_EQ(entries->size(), 10u);
  EXPECT_EQ((*entries)[0].source, "book");
  EXPECT_TRUE(keel::is((*entries)[0].failure, keel::code::failed_precondition));
  auto dry = dlq.replay({.all = true}, nullptr, {.dry_run = true});
  ASSERT_THAT(dry, IsOk());
  EXPECT_EQ(dry->replayed.size(), 10u);
  std::vector<int> booked;
  auto rep = dlq.replay({.all = true}, [&](const keel::dlq_replay_item& x) -> keel::expected<void> {
    auto o = boost::json::value_to<order>(boost::json::parse(x.entry.payload));
    keel::store::write_batch b;
    b.mark_processed("booking", x.message_id);
    if (auto r = (*journal)->commit(b); !r)
      return r;
    booked.push_back(o.id);
    return {};
  });
  ASSERT_THAT(rep, IsOk());
  EXPECT_FALSE(rep->error) << rep->error;
  EXPECT_EQ(booked, (std::vector<int>{1, 3, 5, 7, 9, 11, 13, 15, 17, 19})) << "replayed in order";
  EXPECT_EQ(*dlq.size(), 0u) << "gone from the queue";
  journal->reset();
  fs::remove_all(dir, ec);
}

TEST(PipelineDeadLetters, CodecNeverLosesAnEntry) {
  keel::dead_letter_codec codec;
  codec.add<int>().add<std::string>([](const std::string& s) -> std::string {
    if (s == "boom")
      throw std::runtime_error("cannot encode boom");
    return s; // raw text: not always JSON
  });
  keel::dead_item d;
  d.item = 7;
  d.origin = 3;
  d.stage = "parse";
  d.attempts = 2;
  d.error = keel::invalid_argument_error("bad");
  d.time = std::chrono::system_clock::time_point{std::chrono::milliseconds{1234}};
  d.value = 42;
  auto e = codec.encode(d);
  EXPECT_EQ(e.payload, "42");
  EXPECT_EQ(e.key, "3");
  EXPECT_EQ(e.source, "parse");
  EXPECT_EQ(e.attempts, 2u);
  EXPECT_EQ(e.first_seen, 1234);
  EXPECT_EQ(e.last_seen, 1234);
  EXPECT_EQ(e.failure, d.error);
  d.value = std::string{R"({"ok":true})"};
  EXPECT_EQ(codec.encode(d).payload, R"({"ok":true})");
  d.value = std::string{"not json"};
  EXPECT_THAT(codec.encode(d).payload, HasSubstr("payload not serializable"));
  d.value = std::string{"boom"};
  EXPECT_THAT(codec.encode(d).payload, HasSubstr("cannot encode boom"));
  d.value = 1.5; // no entry for double
  auto note = codec.encode(d);
  EXPECT_THAT(note.payload, HasSubstr("no to_json for type double"));
  // The note is JSON, so the entry can be stored.
  keel::dead_letter_queue dlq{keel::store::make_memory_journal(), "x"};
  EXPECT_THAT(dlq.put(note), IsOk());
}

// -- refusals are per-item errors with their own codes ----------------------------

TEST_F(PipelineResilience, FullBulkheadRefusesItemsWithItsCode) {
  keel::stage_guards guards;
  guards.bulkhead =
      std::make_shared<keel::bulkhead>(keel::bulkhead_config{.name = "db", .max_concurrent = 1});
  auto held = guards.bulkhead->try_acquire(); // someone else holds the only slot
  ASSERT_THAT(held, IsOk());
  std::atomic<int> calls{0};
  auto store = [&calls](const int&) { ++calls; };
  keel::run_config cfg;
  cfg.policy = keel::error_policy::collect_all();
  cfg.retry = keel::retry_policy::none();
  auto result = keel::pipeline_from(keel_test::iota(10))
                    .sink("store", keel::guarded(store, guards))
                    .run(sys, cfg);
  keel_test::expect_accounted(result, 10);
  EXPECT_EQ(result.counts.failed, 10u);
  EXPECT_EQ(calls.load(), 0);
  for (const auto& f : result.failures) {
    EXPECT_TRUE(keel::is(f.error, resilience_code::bulkhead_full)) << f.error;
    EXPECT_TRUE(keel::is(f.error, keel::code::resource_exhausted)) << f.error;
  }
  held->release();
  result = keel::pipeline_from(keel_test::iota(10))
               .sink("store", keel::guarded(store, guards), keel::stage_options{}.with_workers(3))
               .run(sys, cfg);
  keel_test::expect_accounted(result, 10);
  EXPECT_EQ(result.counts.succeeded, 10u) << result.summary();
  EXPECT_EQ(guards.bulkhead->stats().in_use, 0u) << "every slot given back";
}

TEST_F(PipelineResilience, RateLimiterIsSharedByWorkersAndStages) {
  // One bucket of 15 tokens that never refills, shared by the three workers
  // of one stage (20 items: 15 pass) and then by a stage of another run.
  keel::stage_guards guards;
  guards.rate_limiter = std::make_shared<keel::rate_limiter>(
      keel::rate_limiter_config{.name = "api", .rate = 1, .burst = 15}, frozen_clock);
  auto same_key = [](const int&) { return std::string_view{"tenant"}; };
  keel::run_config cfg;
  cfg.policy = keel::error_policy::collect_all();
  cfg.retry = keel::retry_policy::none();
  cfg.batch_size = 1; // spread the items over the workers
  auto result = keel::pipeline_from(keel_test::iota(20))
                    .map("lookup", keel::guarded([](const int& x) { return x; }, guards, same_key),
                         keel::stage_options{}.with_workers(3))
                    .run(sys, cfg);
  keel_test::expect_accounted(result, 20);
  EXPECT_EQ(result.outputs.size(), 15u) << result.summary();
  ASSERT_EQ(result.failures.size(), 5u);
  for (const auto& f : result.failures)
    EXPECT_TRUE(keel::is(f.error, resilience_code::rate_limited)) << f.error;
  result = keel::pipeline_from(keel_test::iota(3))
               .map("enrich", keel::guarded([](const int& x) { return x; }, guards, same_key))
               .run(sys, cfg);
  keel_test::expect_accounted(result, 3);
  EXPECT_EQ(result.counts.failed, 3u) << "the other stage spent the shared bucket";
  EXPECT_EQ(guards.rate_limiter->stats().admitted, 15u);
}

TEST_F(PipelineResilience, RefusalsAreRetriedByTheirCanonicalCode) {
  // A forced-open breaker refuses every attempt; the default retry policy
  // retries `unavailable` (the canonical code of circuit_open) until its
  // attempts are spent; a rule on the distinct code can still send such
  // items elsewhere.
  keel::stage_guards guards;
  guards.breaker = std::make_shared<keel::circuit_breaker>();
  guards.breaker->force_open();
  keel::run_config cfg;
  cfg.policy = keel::error_policy::collect_all();
  cfg.retry = keel::retry_policy{}.with_max_attempts(3).with_backoff(100us, 1ms);
  auto result = keel::pipeline_from(keel_test::iota(5))
                    .map("call", keel::guarded([](const int& x) { return x; }, guards))
                    .run(sys, cfg);
  keel_test::expect_accounted(result, 5);
  EXPECT_EQ(result.counts.failed, 5u);
  EXPECT_EQ(result.stages.at(0).retries, 10u) << "two retries per item";
  for (const auto& f : result.failures)
    EXPECT_EQ(f.attempts, 3u);
  cfg.policy = keel::error_policy::collect_all().on(resilience_code::circuit_open,
                                                    keel::error_class::poison);
  cfg.retry = keel::retry_policy::none();
  result = keel::pipeline_from(keel_test::iota(5))
               .map("call", keel::guarded([](const int& x) { return x; }, guards))
               .run(sys, cfg);
  EXPECT_EQ(result.counts.dead_lettered, 5u);
}

TEST_F(PipelineResilience, ThrowingStageIsRecordedAsFailureAndRestarted) {
  keel::stage_guards guards;
  keel::breaker_config bc;
  bc.consecutive_failures = 100;
  guards.breaker = std::make_shared<keel::circuit_breaker>(bc);
  keel::run_config cfg;
  cfg.retry = keel::retry_policy::none();
  cfg.policy = keel::error_policy::collect_all();
  auto result = keel::pipeline_from(keel_test::iota(4))
                    .map("call", keel::guarded(
                                     [](const int& x) -> int {
                                       if (x == 2)
                                         throw std::runtime_error("bug");
                                       return x;
                                     },
                                     guards))
                    .run(sys, cfg);
  keel_test::expect_accounted(result, 4);
  EXPECT_EQ(result.outputs.size(), 3u);
  ASSERT_EQ(result.failures.size(), 1u);
  EXPECT_TRUE(keel::is(result.failures[0].error, keel::code::panic));
  EXPECT_EQ(result.stages.at(0).restarts, 1u);
  auto m = guards.breaker->metrics();
  EXPECT_EQ(m.failed_calls, 1u);
  EXPECT_EQ(m.buffered_calls, 4u);
}

// -- configuration ---------------------------------------------------------------

TEST(StageResilienceConfig, LoadsFromTheRunConfiguration) {
  auto cfg = keel::run_config_from_json_string(R"({
    "stages": {"charge": {"workers": 2, "resilience": {
      "breaker": {"consecutive_failures": 5, "open_duration_ms": 1000},
      "bulkhead": {"max_concurrent": 4},
      "bulkhead_per_key": true,
      "rate_limit": {"rate": 50, "burst": 5},
      "retry": {"max_attempts": 4}}}}})");
  ASSERT_THAT(cfg, IsOk());
  const auto& ov = cfg->stages.at("charge");
  ASSERT_TRUE(ov.resilience);
  ASSERT_TRUE(ov.retry) << "the resilience's retry is the stage's retry";
  EXPECT_EQ(ov.retry->max_attempts, 4u);
  auto g = keel::make_stage_guards(*cfg, "charge");
  ASSERT_THAT(g, IsOk());
  ASSERT_TRUE(g->breaker);
  EXPECT_EQ(g->breaker->name(), "charge");
  EXPECT_EQ(g->breaker->config().consecutive_failures, 5u);
  EXPECT_FALSE(g->bulkhead);
  ASSERT_TRUE(g->keyed_bulkhead);
  ASSERT_TRUE(g->rate_limiter);
  EXPECT_EQ(g->rate_limiter->config().burst, 5);
  auto none = keel::make_stage_guards(*cfg, "other");
  ASSERT_THAT(none, IsOk());
  EXPECT_FALSE(none->breaker);
  EXPECT_FALSE(none->rate_limiter);
}

TEST(StageResilienceConfig, ErrorsNameTheField) {
  auto bad = keel::run_config_from_json_string(
      R"({"stages": {"charge": {"resilience": {"breaker": {"window_size": 0}}}}})");
  EXPECT_THAT(bad,
              FailedWith(keel::code::invalid_argument,
                         HasSubstr("run_config.stages.charge.resilience.breaker.window_size")));
  bad = keel::run_config_from_json_string(
      R"({"stages": {"charge": {"resilience": {"breakers": {}}}}})");
  EXPECT_THAT(bad, FailedWith(keel::code::invalid_argument, HasSubstr("unknown field 'breakers'")));
  bad = keel::run_config_from_json_string(
      R"({"stages": {"charge": {"resilience": {"bulkhead_per_key": 1}}}})");
  EXPECT_THAT(bad, FailedWith(keel::code::invalid_argument,
                              HasSubstr("run_config.stages.charge.resilience.bulkhead_per_key")));
  bad = keel::run_config_from_json_string(
      R"({"stages": {"charge": {"retry": {}, "resilience": {"retry": {}}}}})");
  EXPECT_THAT(bad, FailedWith(keel::code::invalid_argument, HasSubstr("give one of them")));
  auto plain = keel::stage_resilience_from_json(boost::json::parse(R"({"rate_limit": 3})"));
  EXPECT_THAT(plain, FailedWith(keel::code::invalid_argument, HasSubstr("resilience.rate_limit")));
}

} // namespace
