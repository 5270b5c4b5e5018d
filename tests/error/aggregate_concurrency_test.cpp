// Thread tests for keel/error/aggregate.hpp; meant to run under TSan as well.

#include "keel/error/aggregate.hpp"

#include <atomic>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "keel/testing/matchers.hpp"

namespace {

using keel::code;

constexpr int writers = 4;
constexpr int per_writer = 20000;

/// Each writer's errors, built before the threads start so that the threads
/// spend their time in `add`, where the contention is.
std::vector<std::vector<keel::error>> make_inputs(code c = code::unavailable) {
  std::vector<std::vector<keel::error>> inputs(writers);
  for (int t = 0; t < writers; ++t) {
    inputs[t].reserve(per_writer);
    for (int i = 0; i < per_writer; ++i)
      inputs[t].push_back(keel::make_error(c, "t" + std::to_string(t) + "-" + std::to_string(i)));
  }
  return inputs;
}

/// Runs `write(t)` on `writers` threads while `read()` runs in a loop on one
/// more, until every writer has finished. Returns how often `read` ran.
template <class Write, class Read>
int run_concurrently(Write write, Read read) {
  std::atomic<int> running{writers};
  std::atomic<bool> go{false};
  int reads = 0;
  std::thread reader{[&] {
    while (!go.load())
      std::this_thread::yield();
    // At least one read even if the writers are done before it is scheduled.
    do {
      read();
      ++reads;
    } while (running.load() > 0);
  }};
  std::vector<std::thread> threads;
  for (int t = 0; t < writers; ++t)
    threads.emplace_back([&, t] {
      while (!go.load())
        std::this_thread::yield();
      write(t);
      running.fetch_sub(1);
    });
  go.store(true);
  for (auto& th : threads)
    th.join();
  reader.join();
  return reads;
}

/// Splits "t<thread>-<i>" into (thread, i).
std::pair<int, int> origin_of(const keel::error& err) {
  std::string text{err.message()};
  auto dash = text.find('-');
  return {std::stoi(text.substr(1, dash - 1)), std::stoi(text.substr(dash + 1))};
}

TEST(ErrorBufferConcurrency, KeepsExactlyCapacityOfManyWriters) {
  constexpr std::size_t capacity = 1000;
  auto inputs = make_inputs();
  keel::error_buffer buf{capacity};
  std::size_t last_total = 0;
  bool reads_ok = true;
  auto reads = run_concurrently(
      [&](int t) {
        for (const auto& e : inputs[t])
          buf.add(e);
      },
      [&] {
        auto total = buf.total();
        auto kept = buf.errors();
        auto result = buf.result();
        // Counts only grow, a snapshot never exceeds the capacity, and a result
        // exists once something was added.
        reads_ok = reads_ok && total >= last_total && kept.size() <= capacity
                   && kept.size() <= buf.total() && (total == 0 || result);
        last_total = total;
      });
  EXPECT_TRUE(reads_ok);
  EXPECT_GT(reads, 0);

  EXPECT_EQ(buf.total(), std::size_t{writers * per_writer});
  EXPECT_EQ(buf.overflow(), std::size_t{writers * per_writer} - capacity);
  auto kept = buf.errors();
  ASSERT_EQ(kept.size(), capacity);
  std::set<std::pair<int, int>> seen;
  std::map<int, int> last_of_thread;
  for (const auto& e : kept) {
    auto [t, i] = origin_of(e);
    ASSERT_TRUE(t >= 0 && t < writers && i >= 0 && i < per_writer) << e.message();
    EXPECT_TRUE(e.same_node(inputs[t][i])) << e.message();
    EXPECT_TRUE(seen.emplace(t, i).second) << "duplicate " << e.message();
    // One thread's adds claim increasing slots, so its errors stay in order.
    auto [it, first] = last_of_thread.emplace(t, i);
    if (!first) {
      EXPECT_LT(it->second, i) << e.message();
      it->second = i;
    }
  }
  auto result = buf.result();
  ASSERT_TRUE(result.is_join());
  ASSERT_EQ(result.children().size(), capacity + 1);
  EXPECT_EQ(result.children().back().message(), "(79000 more errors)");
}

TEST(ErrorSummaryConcurrency, CountsAddUpExactly) {
  // Writer t adds a mix of single errors and three-leaf joins, so a lost or
  // doubled update shows in both the per-class counts and the total.
  keel::error_summary summary;
  auto single = keel::unavailable_error("u");
  auto batch = keel::join(keel::invalid_argument_error("a"), keel::not_found_error("b"),
                          keel::wrap(keel::aborted_error("c"), "stage commit"));
  std::uint64_t last_total = 0;
  bool reads_ok = true;
  run_concurrently(
      [&](int) {
        for (int i = 0; i < per_writer; ++i)
          summary.add(i % 4 == 0 ? batch : single);
      },
      [&] {
        auto total = summary.total();
        auto counts = summary.counts();
        (void)summary.to_string();
        std::uint64_t sum = 0;
        for (const auto& [cls, n] : counts)
          sum += n;
        // `counts` was taken after `total`, so it can only have more.
        reads_ok = reads_ok && total >= last_total && sum >= total;
        last_total = total;
      });
  EXPECT_TRUE(reads_ok);

  constexpr std::uint64_t batches = writers * (per_writer / 4);
  constexpr std::uint64_t singles = writers * per_writer - batches;
  EXPECT_EQ(summary.total(), singles + 3 * batches);
  EXPECT_THAT(summary.counts(),
              ::testing::UnorderedElementsAre(::testing::Pair("transient", singles + batches),
                                              ::testing::Pair("validation", batches),
                                              ::testing::Pair("not_found", batches)));
}

TEST(ErrorSampleConcurrency, SeesEveryErrorAndKeepsCapacity) {
  constexpr std::size_t capacity = 100;
  auto inputs = make_inputs();
  keel::error_sample sample{capacity, 1234};
  std::uint64_t last_seen = 0;
  bool reads_ok = true;
  run_concurrently(
      [&](int t) {
        for (const auto& e : inputs[t])
          sample.add(e);
      },
      [&] {
        auto seen = sample.seen();
        auto kept = sample.sample();
        reads_ok = reads_ok && seen >= last_seen && kept.size() <= capacity;
        last_seen = seen;
      });
  EXPECT_TRUE(reads_ok);

  EXPECT_EQ(sample.seen(), std::uint64_t{writers * per_writer});
  auto kept = sample.sample();
  ASSERT_EQ(kept.size(), capacity);
  std::set<std::pair<int, int>> seen;
  for (const auto& e : kept) {
    auto [t, i] = origin_of(e);
    ASSERT_TRUE(t >= 0 && t < writers && i >= 0 && i < per_writer) << e.message();
    EXPECT_TRUE(e.same_node(inputs[t][i])) << e.message();
    EXPECT_TRUE(seen.emplace(t, i).second) << "duplicate " << e.message();
  }
}

} // namespace
