// Pipeline runs: order, sources (container, generator, feeder), flat-map,
// batch and sink stages, back-pressure, and what item_context tells a stage.

#include "helpers.hpp"

#include "keel/error.hpp"
#include "keel/pipeline.hpp"

#include <caf/all.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <future>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;
using keel::code;
using keel_test::eventually;
using keel_test::expect_accounted;
using keel_test::finish;
using keel_test::iota;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

class PipelineOrdering : public keel_test::pipeline_test {};
class PipelineSources : public keel_test::pipeline_test {};
class PipelineStages : public keel_test::pipeline_test {};
class PipelineBackPressure : public keel_test::pipeline_test {};
class PipelineContext : public keel_test::pipeline_test {};

constexpr uint64_t top_bit = uint64_t{1} << 63;

/// Per-item sleeps of 0..200 us, seeded.
std::vector<int> random_sleeps(int n, uint64_t seed) {
  std::mt19937_64 rng{seed};
  std::vector<int> xs(static_cast<size_t>(n));
  for (auto& x : xs)
    x = static_cast<int>(rng() % 201);
  return xs;
}

/// Records the order in which a stage saw its items (thread-safe).
class order_log {
public:
  void add(int x) {
    std::lock_guard<std::mutex> g{mtx_};
    xs_.push_back(x);
  }

  std::vector<int> get() const {
    std::lock_guard<std::mutex> g{mtx_};
    return xs_;
  }

private:
  mutable std::mutex mtx_;
  std::vector<int> xs_;
};

const keel::stage_stats& stats_of(const keel::run_report& r, const std::string& name) {
  static const keel::stage_stats none;
  for (const auto& s : r.stages)
    if (s.name == name)
      return s;
  ADD_FAILURE() << "no stage " << name << " in the report";
  return none;
}

// -- order ------------------------------------------------------------------------------

TEST_F(PipelineOrdering, AnOrderedStageDeliversInInputOrder) {
  constexpr int n = 600;
  const auto sleeps = random_sleeps(n, 42);
  order_log seen;
  std::mutex mtx;
  std::set<uint32_t> workers;
  keel::run_config c;
  c.batch_size = 4;
  auto r = keel::pipeline_from(iota(n))
               .map(
                   "work",
                   [&](int x, keel::item_context& ctx) {
                     {
                       std::lock_guard<std::mutex> g{mtx};
                       workers.insert(ctx.worker());
                     }
                     std::this_thread::sleep_for(std::chrono::microseconds(sleeps[x]));
                     return x;
                   },
                   keel::stage_options{}.with_workers(3).with_ordered())
               .map("record",
                    [&](int x) {
                      seen.add(x);
                      return x;
                    })
               .run(sys, c);
  EXPECT_FALSE(r.error) << r.summary();
  EXPECT_EQ(seen.get(), iota(n)) << "the next stage saw the items out of order";
  EXPECT_EQ(r.outputs, iota(n)) << "one worker downstream keeps the order to the end";
  EXPECT_EQ(workers, (std::set<uint32_t>{0, 1, 2}));
  EXPECT_EQ(stats_of(r, "work").workers, 3u);
  expect_accounted(r, n);
}

TEST_F(PipelineOrdering, UnorderedWorkersWithOrderedResults) {
  constexpr int n = 600;
  const auto sleeps = random_sleeps(n, 7);
  keel::run_config c;
  c.batch_size = 4;
  c.ordered_results = true;
  auto r = keel::pipeline_from(iota(n))
               .map(
                   "work",
                   [&](int x) {
                     std::this_thread::sleep_for(std::chrono::microseconds(sleeps[x]));
                     return 2 * x;
                   },
                   keel::stage_options{}.with_workers(3))
               .run(sys, c);
  EXPECT_FALSE(r.error) << r.summary();
  ASSERT_EQ(r.outputs.size(), static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    ASSERT_EQ(r.outputs[i], 2 * i);
    ASSERT_EQ(r.output_ids[i], static_cast<uint64_t>(i));
    ASSERT_EQ(r.output_origins[i], static_cast<uint64_t>(i));
  }
  expect_accounted(r, n);
}

TEST_F(PipelineOrdering, RetriedItemsLeaveTheOrderButNoneIsLostOrRepeated) {
  constexpr int n = 600;
  const auto sleeps = random_sleeps(n, 99);
  order_log seen;
  keel::run_config c;
  c.batch_size = 4;
  c.retry = keel::retry_policy{}.with_backoff(100us, 1ms);
  auto r = keel::pipeline_from(iota(n))
               .map(
                   "work",
                   [&](int x, keel::item_context& ctx) -> keel::expected<int> {
                     std::this_thread::sleep_for(std::chrono::microseconds(sleeps[x]));
                     if (x % 25 == 7 && ctx.attempt() == 1)
                       return keel::unavailable_error("later");
                     return x;
                   },
                   keel::stage_options{}.with_workers(3).with_ordered())
               .map("record",
                    [&](int x) {
                      seen.add(x);
                      return x;
                    })
               .run(sys, c);
  EXPECT_FALSE(r.error) << r.summary();
  EXPECT_EQ(stats_of(r, "work").retries, static_cast<uint64_t>(n / 25));
  auto order = seen.get();
  ASSERT_EQ(order.size(), static_cast<size_t>(n));
  auto sorted = order;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(sorted, iota(n)) << "every item exactly once";
  // Items that were not retried keep their relative (input) order.
  std::vector<int> in_order;
  for (int x : order)
    if (x % 25 != 7)
      in_order.push_back(x);
  EXPECT_TRUE(std::is_sorted(in_order.begin(), in_order.end()));
  expect_accounted(r, n);
}

// Regression: a filter that empties whole batches sends empty batches to the
// resequencer of the next (ordered) stage; they must not hold up the order.
TEST_F(PipelineOrdering, EmptyBatchesBeforeAnOrderedStageDoNotStallIt) {
  constexpr int n = 1000;
  keel::run_config c;
  c.batch_size = 10;
  auto h = keel::pipeline_from(iota(n))
               .filter("late half", [](int x) { return x >= n / 2 || x % 97 == 0; })
               .map(
                   "work", [](int x) { return x + 1; },
                   keel::stage_options{}.with_workers(3).with_ordered())
               .start(sys, c);
  auto r = finish(h, 20s);
  EXPECT_FALSE(r.error) << r.summary();
  std::vector<int> expected;
  for (int x = 0; x < n; ++x)
    if (x >= n / 2 || x % 97 == 0)
      expected.push_back(x + 1);
  EXPECT_EQ(r.outputs, expected);
  expect_accounted(r, n);
}

// Regression: a cancel that reaches an ordered stage's resequencer before its
// wiring (or between two ordered stages, while items are still arriving) must
// still end the run, with every item accounted for.
TEST_F(PipelineOrdering, CancellingOrderedStagesAtAnyMomentEndsTheRun) {
  for (int round = 0; round < 40; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    keel::run_config c;
    c.batch_size = 3;
    auto h = keel::pipeline_from(iota(3000))
                 .map(
                     "first",
                     [](int x) {
                       if (x % 50 == 0)
                         std::this_thread::sleep_for(20us);
                       return x;
                     },
                     keel::stage_options{}.with_workers(3).with_ordered())
                 .map(
                     "second", [](int x) { return x * 2; },
                     keel::stage_options{}.with_workers(2).with_ordered())
                 .start(sys, c);
    // Round 0 cancels before the coordinator can have wired anything; later
    // rounds at growing moments of the run.
    if (round > 0)
      std::this_thread::sleep_for(std::chrono::microseconds(25 * round));
    h.cancel();
    auto r = finish(h, 20s);
    EXPECT_TRUE(r.cancelled || !r.error) << r.summary();
    expect_accounted(r, 3000);
  }
}

// -- sources --------------------------------------------------------------------------

TEST_F(PipelineSources, GeneratorUntilNullopt) {
  auto calls = std::make_shared<std::atomic<int>>(0);
  auto next = std::make_shared<int>(0);
  keel::run_config c;
  c.batch_size = 64;
  c.ordered_results = true;
  auto r = keel::pipeline_from_generator<int>([calls, next]() -> std::optional<int> {
             ++*calls;
             if (*next == 500)
               return std::nullopt;
             return (*next)++;
           }).map("double", [](int x) {
               return 2 * x;
             }).run(sys, c);
  EXPECT_FALSE(r.error) << r.summary();
  ASSERT_EQ(r.outputs.size(), 500u);
  for (int i = 0; i < 500; ++i)
    ASSERT_EQ(r.outputs[i], 2 * i);
  EXPECT_EQ(calls->load(), 501) << "called until nullopt, then never again";
  EXPECT_EQ(r.counts.from_source, 500u);
  expect_accounted(r, 500);
}

TEST_F(PipelineSources, AThrowingGeneratorFailsTheRun) {
  auto next = std::make_shared<int>(0);
  keel::run_config c;
  c.batch_size = 32;
  auto r = keel::pipeline_from_generator<int>([next]() -> std::optional<int> {
             if (*next == 100)
               throw std::runtime_error("disk gone");
             return (*next)++;
           }).map("work", [](int x) {
               return x;
             }).run(sys, c);
  EXPECT_EQ(r.error.code(), code::panic) << r.summary();
  EXPECT_EQ(r.error.message(), "source failed");
  EXPECT_THAT(keel::to_string(r.error), HasSubstr("disk gone"));
  EXPECT_FALSE(r.cancelled);
  EXPECT_EQ(r.counts.from_source, 100u) << "the items read before the throw entered the run";
  EXPECT_EQ(r.counts.total(), r.counts.ended()) << r.summary();
  EXPECT_EQ(r.counts.lost, 0u);
}

/// Counts its copies (moves are free).
struct tracked {
  int v = 0;
  std::shared_ptr<std::atomic<int>> copies;

  tracked(int x, std::shared_ptr<std::atomic<int>> c) : v(x), copies(std::move(c)) {}
  tracked(const tracked& o) : v(o.v), copies(o.copies) { ++*copies; }
  tracked(tracked&&) noexcept = default;
  tracked& operator=(const tracked& o) {
    v = o.v;
    copies = o.copies;
    ++*copies;
    return *this;
  }
  tracked& operator=(tracked&&) noexcept = default;
};

TEST_F(PipelineSources, AContainerIsMovedIntoTheRunAndItsItemsMovedOut) {
  auto copies = std::make_shared<std::atomic<int>>(0);
  auto make = [&] {
    std::vector<tracked> xs;
    for (int i = 0; i < 100; ++i)
      xs.emplace_back(i, copies);
    return xs;
  };
  keel::run_config c;
  c.batch_size = 16;
  c.ordered_results = true;
  {
    auto r =
        keel::pipeline_from(make()).map("value", [](const tracked& t) { return t.v; }).run(sys, c);
    EXPECT_EQ(r.outputs, iota(100)) << r.summary();
    EXPECT_EQ(copies->load(), 0) << "an rvalue container is moved, and so are its items";
  }
  {
    auto xs = make();
    auto r = keel::pipeline_from(xs).map("value", [](const tracked& t) { return t.v; }).run(sys, c);
    EXPECT_EQ(r.outputs, iota(100)) << r.summary();
    EXPECT_EQ(copies->load(), 100) << "an lvalue container is copied once, nothing more";
    for (int i = 0; i < 100; ++i)
      ASSERT_EQ(xs[i].v, i) << "the caller's container is left alone";
  }
  {
    std::vector<std::unique_ptr<int>> ptrs;
    for (int i = 0; i < 50; ++i)
      ptrs.push_back(std::make_unique<int>(i));
    auto r = keel::pipeline_from(std::move(ptrs))
                 .map("own", [](std::unique_ptr<int>& p) { return std::move(p); })
                 .map("deref", [](const std::unique_ptr<int>& p) { return *p; })
                 .run(sys, c);
    EXPECT_EQ(r.outputs, iota(50)) << "move-only items work end to end";
  }
}

TEST_F(PipelineSources, FeederBackPressureBlocksFeedUntilThereIsRoom) {
  constexpr int chunk = 50;
  constexpr int chunks = 20;
  constexpr uint32_t credit = 2;
  std::atomic<int> processed{0};
  keel::run_config c;
  c.credit = credit;
  c.ordered_results = true;
  auto h = keel::pipeline_from_feeder<int>()
               .map("slow",
                    [&](int x) {
                      std::this_thread::sleep_for(100us);
                      ++processed;
                      return x;
                    })
               .start(sys, c);
  int fed = 0;
  int max_lag = 0;
  for (int k = 0; k < chunks; ++k) {
    std::vector<int> xs(chunk);
    std::iota(xs.begin(), xs.end(), fed);
    auto err = h.feed(std::move(xs));
    ASSERT_FALSE(err) << keel::to_string(err);
    fed += chunk;
    // feed() returns once its chunk (one batch) left on a link: at most
    // `credit` chunks are unacknowledged, all others were processed.
    int lag = fed - processed.load();
    max_lag = std::max(max_lag, lag);
    ASSERT_LE(lag, static_cast<int>(credit) * chunk) << "after chunk " << k;
  }
  h.close();
  auto r = finish(h);
  EXPECT_FALSE(r.error) << r.summary();
  EXPECT_EQ(r.outputs, iota(chunks * chunk));
  EXPECT_EQ(r.counts.from_source, static_cast<uint64_t>(chunks * chunk));
  EXPECT_LE(stats_of(r, "slow").peak_queue, static_cast<uint64_t>(credit * chunk));
  expect_accounted(r, chunks * chunk);
  std::cout << "largest lag of the stage behind the feeder: " << max_lag << " items\n";
}

TEST_F(PipelineSources, FeedingAfterCloseFails) {
  keel::run_config c;
  c.ordered_results = true;
  auto h = keel::pipeline_from_feeder<int>().map("work", [](int x) { return x; }).start(sys, c);
  ASSERT_FALSE(h.feed({1, 2, 3}));
  h.close();
  auto err = h.feed({4});
  EXPECT_EQ(err.code(), code::failed_precondition) << keel::to_string(err);
  auto r = finish(h);
  EXPECT_FALSE(r.error) << r.summary();
  EXPECT_THAT(r.outputs, ElementsAre(1, 2, 3));
  EXPECT_EQ(r.counts.from_source, 3u);
  err = h.feed({5});
  EXPECT_EQ(err.code(), code::failed_precondition) << keel::to_string(err);
  h.close(); // harmless after the end
}

struct feed_log {
  std::mutex mtx;
  std::vector<keel::error> errors;
  keel::error late;
  std::promise<void> done;
};

/// Feeds three chunks one after the other, closes, then tries a fourth.
caf::behavior async_feeder(caf::event_based_actor* self,
                           std::shared_ptr<keel::run_handle<int, int>> h,
                           std::shared_ptr<feed_log> log) {
  auto note = [log](const keel::error& e) {
    std::lock_guard<std::mutex> g{log->mtx};
    log->errors.push_back(e);
  };
  h->feed_async(self, {0, 1, 2}, [=](const keel::error& e0) {
    note(e0);
    h->feed_async(self, {3, 4, 5}, [=](const keel::error& e1) {
      note(e1);
      h->feed_async(self, {6, 7, 8}, [=](const keel::error& e2) {
        note(e2);
        h->close();
        h->feed_async(self, {100}, [=](const keel::error& e3) {
          log->late = e3;
          log->done.set_value();
          self->quit();
        });
      });
    });
  });
  return {[](int) {}};
}

TEST_F(PipelineSources, FeedAsyncFromAnActor) {
  keel::run_config c;
  c.ordered_results = true;
  auto h = std::make_shared<keel::run_handle<int, int>>(
      keel::pipeline_from_feeder<int>().map("twice", [](int x) { return 2 * x; }).start(sys, c));
  auto log = std::make_shared<feed_log>();
  auto fed = log->done.get_future();
  sys.spawn(async_feeder, h, log);
  ASSERT_EQ(fed.wait_for(30s), std::future_status::ready);
  auto r = finish(*h);
  EXPECT_FALSE(r.error) << r.summary();
  EXPECT_THAT(r.outputs, ElementsAre(0, 2, 4, 6, 8, 10, 12, 14, 16));
  {
    std::lock_guard<std::mutex> g{log->mtx};
    ASSERT_EQ(log->errors.size(), 3u);
    for (const auto& e : log->errors)
      EXPECT_FALSE(e) << keel::to_string(e);
    EXPECT_EQ(log->late.code(), code::failed_precondition) << keel::to_string(log->late);
  }
  EXPECT_EQ(r.counts.from_source, 9u);
  expect_accounted(r, 9);
}

TEST_F(PipelineSources, TheCoordinatorCanBeMonitoredFromAnActor) {
  std::atomic<bool> open{false};
  auto h = keel::pipeline_from(iota(10))
               .map("work",
                    [&](int x) {
                      if (x == 0)
                        eventually([&] { return open.load(); }, 10s);
                      return x;
                    })
               .start(sys);
  std::promise<void> down;
  auto seen_down = down.get_future();
  auto coordinator = h.coordinator();
  // Held until the end: an actor nobody references is gone before any down message.
  auto watcher = sys.spawn([coordinator, &down](caf::event_based_actor* self) -> caf::behavior {
    self->monitor(coordinator);
    self->set_down_handler([&down, self](caf::down_msg&) {
      down.set_value();
      self->quit();
    });
    return {[](int) {}};
  });
  EXPECT_EQ(seen_down.wait_for(5ms), std::future_status::timeout) << "the run is still held";
  open = true;
  EXPECT_EQ(seen_down.wait_for(30s), std::future_status::ready);
  auto r = finish(h);
  EXPECT_FALSE(r.error) << r.summary();
  caf::anon_send_exit(watcher, caf::exit_reason::user_shutdown); // in case it did not quit
}

// -- flat_map, batch, sink ----------------------------------------------------------------

TEST_F(PipelineStages, FlatMapChildrenGetNewIdsAndKeepTheirOrigin) {
  keel::run_config c;
  c.ordered_results = true;
  auto r = keel::pipeline_from(iota(10))
               .flat_map("split",
                         [](int x) {
                           if (x % 3 == 0)
                             return std::vector<int>{};
                           return std::vector<int>{x, x + 100};
                         })
               .map("check",
                    [](int v) -> keel::expected<int> {
                      if (v == 105)
                        return keel::invalid_argument_error("child 105");
                      return v;
                    })
               .run(sys, c);
  EXPECT_THAT(r.outputs, ElementsAre(1, 101, 2, 102, 4, 104, 5, 7, 107, 8, 108)) << r.summary();
  EXPECT_THAT(r.output_origins, ElementsAre(1, 1, 2, 2, 4, 4, 5, 7, 7, 8, 8));
  std::set<uint64_t> ids;
  for (auto id : r.output_ids) {
    EXPECT_NE(id & top_bit, 0u) << "a child's id has the top bit set: " << id;
    ids.insert(id);
  }
  EXPECT_EQ(ids.size(), r.output_ids.size()) << "ids are unique";
  ASSERT_EQ(r.failures.size(), 1u);
  EXPECT_EQ(r.failures[0].origin, 5u);
  EXPECT_NE(r.failures[0].item & top_bit, 0u);
  EXPECT_EQ(r.failures[0].stage, "check");
  EXPECT_EQ(r.counts.from_source, 10u);
  EXPECT_EQ(r.counts.created, 12u);
  EXPECT_EQ(r.counts.consumed, 6u) << "parents with children";
  EXPECT_EQ(r.counts.filtered, 4u) << "parents without";
  EXPECT_EQ(r.counts.failed, 1u);
  EXPECT_EQ(r.counts.succeeded, 11u);
  const auto& s = stats_of(r, "split");
  EXPECT_EQ(s.in, 10u);
  EXPECT_EQ(s.created, 12u);
  EXPECT_EQ(s.out, 12u);
  EXPECT_EQ(stats_of(r, "check").in, 12u);
  expect_accounted(r, 10);
}

TEST_F(PipelineStages, BatchBySize) {
  keel::run_config c;
  c.ordered_results = true;
  c.batch_size = 5; // groups span input batches
  auto r = keel::pipeline_from(iota(100))
               .batch("group", 8)
               .map("size", [](const std::vector<int>& g) { return g; })
               .run(sys, c);
  EXPECT_FALSE(r.error) << r.summary();
  ASSERT_EQ(r.outputs.size(), 13u);
  std::vector<int> all;
  for (size_t i = 0; i < r.outputs.size(); ++i) {
    EXPECT_EQ(r.outputs[i].size(), i < 12 ? 8u : 4u) << "group " << i;
    all.insert(all.end(), r.outputs[i].begin(), r.outputs[i].end());
    EXPECT_NE(r.output_ids[i] & top_bit, 0u);
    EXPECT_EQ(r.output_origins[i], static_cast<uint64_t>(8 * i)) << "a group's origin is its first";
  }
  EXPECT_EQ(all, iota(100));
  EXPECT_EQ(r.counts.consumed, 100u);
  EXPECT_EQ(r.counts.created, 13u);
  EXPECT_EQ(r.counts.succeeded, 13u);
  expect_accounted(r, 100);
}

TEST_F(PipelineStages, BatchByTimeEmitsPartialGroups) {
  std::mutex mtx;
  std::vector<std::vector<int>> groups;
  auto h = keel::pipeline_from_feeder<int>()
               .batch("group", 100, 5ms)
               .sink("store",
                     [&](const std::vector<int>& g) {
                       std::lock_guard<std::mutex> lock{mtx};
                       groups.push_back(g);
                     })
               .start(sys);
  auto count = [&] {
    std::lock_guard<std::mutex> lock{mtx};
    return groups.size();
  };
  ASSERT_FALSE(h.feed({0, 1, 2}));
  // Far fewer than 100 items: only the timer can emit them.
  ASSERT_TRUE(eventually([&] { return count() == 1; }, 10s));
  ASSERT_FALSE(h.feed({3, 4}));
  ASSERT_TRUE(eventually([&] { return count() == 2; }, 10s));
  h.close();
  auto r = finish(h);
  EXPECT_FALSE(r.error) << r.summary();
  std::lock_guard<std::mutex> lock{mtx};
  EXPECT_THAT(groups, ElementsAre(ElementsAre(0, 1, 2), ElementsAre(3, 4)));
  EXPECT_EQ(r.counts.consumed, 5u);
  EXPECT_EQ(r.counts.created, 2u);
  EXPECT_EQ(r.counts.succeeded, 2u);
  expect_accounted(r, 5);
}

TEST_F(PipelineStages, SinksReturningErrorOrExpectedVoid) {
  std::atomic<int> stored{0};
  auto check = [](const keel::run_report& r) {
    EXPECT_EQ(r.counts.succeeded, 90u) << r.summary();
    EXPECT_EQ(r.counts.failed, 10u);
    ASSERT_EQ(r.failures.size(), 10u);
    for (const auto& f : r.failures) {
      EXPECT_EQ(f.item % 10, 3u);
      EXPECT_EQ(f.stage, "store");
      EXPECT_EQ(f.error.code(), code::invalid_argument);
    }
    const auto& s = stats_of(r, "store");
    EXPECT_EQ(s.succeeded, 90u);
    EXPECT_EQ(s.failed, 10u);
    EXPECT_EQ(s.out, 0u) << "a sink passes nothing on";
    ASSERT_TRUE(r.error.is_join());
    EXPECT_EQ(r.error.children().size(), 10u);
    expect_accounted(r, 100);
  };
  {
    SCOPED_TRACE("keel::error");
    auto r = keel::pipeline_from(iota(100))
                 .sink("store",
                       [&](int x) -> keel::error {
                         if (x % 10 == 3)
                           return keel::invalid_argument_error("no " + std::to_string(x));
                         ++stored;
                         return {};
                       })
                 .run(sys);
    check(r);
    EXPECT_EQ(stored.load(), 90);
  }
  {
    SCOPED_TRACE("keel::expected<void>");
    auto r = keel::pipeline_from(iota(100))
                 .sink("store",
                       [&](int x) -> keel::expected<void> {
                         if (x % 10 == 3)
                           return keel::invalid_argument_error("no " + std::to_string(x));
                         ++stored;
                         return {};
                       })
                 .run(sys);
    check(r);
    EXPECT_EQ(stored.load(), 180);
  }
}

// -- back-pressure ----------------------------------------------------------------------

TEST_F(PipelineBackPressure, ASlowSinkBoundsQueuesAndHowFarTheSourceRunsAhead) {
  constexpr uint64_t n = 400;
  constexpr uint32_t batch = 4;
  constexpr uint32_t credit = 2;
  constexpr uint32_t sink_credit = 1;
  struct counters {
    std::atomic<uint64_t> generated{0};
    std::atomic<uint64_t> sunk{0};
    std::atomic<uint64_t> max_ahead{0};
  };
  auto k = std::make_shared<counters>();
  keel::run_config c;
  c.batch_size = batch;
  c.credit = credit;
  auto r = keel::pipeline_from_generator<uint64_t>([k]() -> std::optional<uint64_t> {
             auto g = k->generated.load();
             if (g == n)
               return std::nullopt;
             // Items generated (this one included) and not yet stored.
             auto ahead = g + 1 - k->sunk.load();
             if (ahead > k->max_ahead.load())
               k->max_ahead = ahead;
             k->generated = g + 1;
             return g;
           })
               .map("a", [](uint64_t x) { return x; })
               .map("b", [](uint64_t x) { return x; })
               .sink(
                   "store",
                   [k](uint64_t) {
                     std::this_thread::sleep_for(100us);
                     ++k->sunk;
                   },
                   keel::stage_options{}.with_credit(sink_credit))
               .run(sys, c);
  EXPECT_FALSE(r.error) << r.summary();
  EXPECT_EQ(k->sunk.load(), n);
  // Each link holds at most its credit in batches; the source builds one
  // batch while it has credit on its own link.
  const uint64_t bound = (credit + credit + sink_credit) * batch;
  EXPECT_LE(k->max_ahead.load(), bound) << r.summary();
  EXPECT_LE(stats_of(r, "a").peak_queue, uint64_t{credit} * batch);
  EXPECT_LE(stats_of(r, "b").peak_queue, uint64_t{credit} * batch);
  EXPECT_LE(stats_of(r, "store").peak_queue, uint64_t{sink_credit} * batch);
  EXPECT_GT(stats_of(r, "store").peak_queue, 0u);
  std::cout << "the source ran at most " << k->max_ahead.load() << " items ahead (bound " << bound
            << ")\n";
  expect_accounted(r, n);
}

// -- item_context and tracing --------------------------------------------------------------

struct seen_item {
  uint32_t worker = 0;
  std::string stage;
  uint32_t attempt = 0;
  keel::envelope env;
  uint64_t id = 0;
  bool cancelled = true;
  bool has_deadline = true;
};

class context_log {
public:
  void add(int x, keel::item_context& ctx) {
    seen_item s{ctx.worker(),
                ctx.stage(),
                ctx.attempt(),
                ctx.item(),
                ctx.id(),
                ctx.cancelled(),
                ctx.deadline().has_value()};
    std::lock_guard<std::mutex> g{mtx_};
    items_[x] = s;
  }

  std::map<int, seen_item> get() const {
    std::lock_guard<std::mutex> g{mtx_};
    return items_;
  }

private:
  mutable std::mutex mtx_;
  std::map<int, seen_item> items_;
};

constexpr const char* root_traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

TEST_F(PipelineContext, StagesSeeWorkerStageAttemptAndTrace) {
  constexpr int n = 64;
  constexpr uint64_t seed = 7;
  auto root = keel::trace_context::parse(root_traceparent);
  ASSERT_TRUE(root.has_value());
  auto run_once = [&](context_log& at_a, context_log& at_b) {
    keel::run_config c;
    c.trace = *root;
    c.seed = seed;
    c.batch_size = 8;
    return keel::pipeline_from(iota(n))
        .map(
            "a",
            [&](int x, keel::item_context& ctx) {
              at_a.add(x, ctx);
              return x;
            },
            keel::stage_options{}.with_workers(2))
        .map("b",
             [&](int x, keel::item_context& ctx) {
               at_b.add(x, ctx);
               return x;
             })
        .run(sys, c);
  };
  context_log at_a, at_b;
  auto r = run_once(at_a, at_b);
  EXPECT_FALSE(r.error) << r.summary();
  auto a = at_a.get();
  auto b = at_b.get();
  ASSERT_EQ(a.size(), static_cast<size_t>(n));
  ASSERT_EQ(b.size(), static_cast<size_t>(n));
  std::set<uint32_t> workers_a, workers_b;
  for (int x = 0; x < n; ++x) {
    SCOPED_TRACE(x);
    const auto& sa = a[x];
    const auto& sb = b[x];
    workers_a.insert(sa.worker);
    workers_b.insert(sb.worker);
    EXPECT_EQ(sa.stage, "a");
    EXPECT_EQ(sb.stage, "b");
    EXPECT_EQ(sa.attempt, 1u);
    EXPECT_EQ(sa.env.attempt, 1u);
    EXPECT_EQ(sa.id, static_cast<uint64_t>(x));
    EXPECT_EQ(sa.env.id, static_cast<uint64_t>(x));
    EXPECT_EQ(sa.env.origin, static_cast<uint64_t>(x));
    EXPECT_EQ(sb.env.id, static_cast<uint64_t>(x));
    EXPECT_FALSE(sa.cancelled);
    EXPECT_FALSE(sa.has_deadline);
    // One trace for the run; a new span per stage, parented by the previous.
    ASSERT_TRUE(sa.env.trace.valid());
    ASSERT_TRUE(sb.env.trace.valid());
    EXPECT_EQ(sa.env.trace.trace_id, root->trace_id);
    EXPECT_EQ(sb.env.trace.trace_id, root->trace_id);
    EXPECT_EQ(sa.env.trace.flags, root->flags);
    EXPECT_EQ(sa.env.trace.span_id, keel::span_id_of(seed, x, 1));
    EXPECT_EQ(sa.env.trace.parent_span_id, keel::span_id_of(seed, x, 0));
    EXPECT_EQ(sb.env.trace.span_id, keel::span_id_of(seed, x, 2));
    EXPECT_EQ(sb.env.trace.parent_span_id, sa.env.trace.span_id);
    EXPECT_NE(sa.env.trace.span_id, sb.env.trace.span_id);
  }
  EXPECT_EQ(workers_a, (std::set<uint32_t>{0, 1}));
  EXPECT_EQ(workers_b, (std::set<uint32_t>{0}));
  // All span ids of the run are distinct.
  std::set<uint64_t> spans;
  for (int x = 0; x < n; ++x) {
    spans.insert(a[x].env.trace.span_id);
    spans.insert(b[x].env.trace.span_id);
  }
  EXPECT_EQ(spans.size(), static_cast<size_t>(2 * n));
  // The same seed gives the same trace.
  context_log again_a, again_b;
  run_once(again_a, again_b);
  auto a2 = again_a.get();
  for (int x = 0; x < n; ++x)
    ASSERT_EQ(a2[x].env.trace, a[x].env.trace) << x;
}

TEST_F(PipelineContext, WithoutAConfiguredTraceTheRunMakesOne) {
  context_log at_a;
  keel::run_config c;
  c.deadline = 60s;
  auto r = keel::pipeline_from(iota(10))
               .map("a",
                    [&](int x, keel::item_context& ctx) {
                      at_a.add(x, ctx);
                      return x;
                    })
               .run(sys, c);
  EXPECT_FALSE(r.error) << r.summary();
  auto a = at_a.get();
  ASSERT_EQ(a.size(), 10u);
  for (const auto& [x, s] : a) {
    EXPECT_TRUE(s.env.trace.valid()) << x;
    EXPECT_EQ(s.env.trace.trace_id, a[0].env.trace.trace_id) << x;
    EXPECT_TRUE(s.has_deadline) << x;
  }
}

// envelope.hpp: an item's span "parent is the item's span at the previous
// stage (for items made by a stage: the span of the source item at that
// stage)". A flat-map child of source item x must point at x's span at the
// flat-map stage, or tracing cannot link a child to where it came from.
TEST_F(PipelineContext, AFlatMapChildsSpanHasTheParentsSpanAsParent) {
  std::mutex mtx;
  std::map<uint64_t, uint64_t> parent_span;      // origin -> span at "split"
  std::map<uint64_t, keel::envelope> child_seen; // child id -> envelope at "check"
  keel::run_config c;
  c.seed = 11;
  auto r = keel::pipeline_from(iota(10))
               .flat_map("split",
                         [&](int x, keel::item_context& ctx) {
                           std::lock_guard<std::mutex> g{mtx};
                           parent_span[ctx.item().origin] = ctx.item().trace.span_id;
                           return std::vector<int>{x, x};
                         })
               .map("check",
                    [&](int x, keel::item_context& ctx) {
                      std::lock_guard<std::mutex> g{mtx};
                      child_seen[ctx.id()] = ctx.item();
                      return x;
                    })
               .run(sys, c);
  EXPECT_FALSE(r.error) << r.summary();
  std::lock_guard<std::mutex> g{mtx};
  ASSERT_EQ(child_seen.size(), 20u);
  for (const auto& [id, env] : child_seen) {
    ASSERT_TRUE(parent_span.count(env.origin));
    EXPECT_EQ(env.trace.parent_span_id, parent_span[env.origin])
        << "child " << (id & ~top_bit) << " of item " << env.origin;
  }
}

// Groups a batch stage emits carry the run's trace, whether a group is full
// or flushed by its timer (or at the end of the stream, the same path).
TEST_F(PipelineContext, GroupsKeepTheRunsTraceHoweverTheyAreEmitted) {
  std::mutex mtx;
  std::vector<std::pair<size_t, bool>> groups; // size, trace valid
  auto h = keel::pipeline_from_feeder<int>()
               .batch("group", 4, 5ms)
               .sink("store",
                     [&](const std::vector<int>& xs, keel::item_context& ctx) {
                       std::lock_guard<std::mutex> lock{mtx};
                       groups.emplace_back(xs.size(), ctx.item().trace.valid());
                     })
               .start(sys);
  auto count = [&] {
    std::lock_guard<std::mutex> lock{mtx};
    return groups.size();
  };
  ASSERT_FALSE(h.feed({0, 1, 2, 3})); // full
  ASSERT_TRUE(eventually([&] { return count() == 1; }, 10s));
  ASSERT_FALSE(h.feed({4, 5})); // flushed by the timer
  ASSERT_TRUE(eventually([&] { return count() == 2; }, 10s));
  h.close();
  auto r = finish(h);
  EXPECT_FALSE(r.error) << r.summary();
  std::lock_guard<std::mutex> lock{mtx};
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(groups[0].first, 4u);
  EXPECT_TRUE(groups[0].second) << "a full group";
  EXPECT_EQ(groups[1].first, 2u);
  EXPECT_TRUE(groups[1].second) << "a group flushed by the timer";
}

} // namespace
