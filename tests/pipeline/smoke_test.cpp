#include "helpers.hpp"

#include "keel/error.hpp"
#include "keel/pipeline.hpp"

#include <caf/all.hpp>
#include <gtest/gtest.h>

#include <iostream>
#include <numeric>

using namespace std::chrono_literals;

namespace {

using keel_test::config;

TEST(PipelineSmoke, MapFilterCollect) {
  config cfg;
  caf::actor_system sys{cfg};
  std::vector<int> xs(10000);
  std::iota(xs.begin(), xs.end(), 0);
  auto r = keel::pipeline_from(xs)
               .map(
                   "double", [](int x) { return x * 2; }, keel::stage_options{}.with_workers(2))
               .filter("even4", [](int x) { return x % 4 == 0; })
               .run(sys, [] {
                 keel::run_config c;
                 c.ordered_results = true;
                 return c;
               }());
  std::cout << r.summary();
  EXPECT_FALSE(r.error);
  ASSERT_EQ(r.outputs.size(), 5000u);
  for (size_t i = 0; i < r.outputs.size(); ++i)
    ASSERT_EQ(r.outputs[i], static_cast<int>(i * 4));
  EXPECT_EQ(r.counts.total(), r.counts.ended());
}

TEST(PipelineSmoke, ErrorsAndExceptions) {
  config cfg;
  caf::actor_system sys{cfg};
  std::vector<int> xs(1000);
  std::iota(xs.begin(), xs.end(), 0);
  auto r = keel::pipeline_from(xs)
               .map(
                   "check",
                   [](int x) -> keel::expected<int> {
                     if (x % 100 == 7)
                       return keel::invalid_argument_error("bad " + std::to_string(x));
                     if (x % 250 == 3)
                       throw std::runtime_error("boom " + std::to_string(x));
                     return x;
                   },
                   keel::stage_options{}.with_workers(2).with_ordered())
               .run(sys);
  std::cout << r.summary();
  EXPECT_EQ(r.failures.size(), 10u);
  EXPECT_EQ(r.dead_letters.size(), 4u);
  EXPECT_EQ(r.outputs.size(), 986u);
  EXPECT_EQ(r.counts.total(), r.counts.ended());
  for (size_t i = 1; i < r.outputs.size(); ++i)
    ASSERT_LT(r.outputs[i - 1], r.outputs[i]);
}

TEST(PipelineSmoke, SinkAndBatch) {
  config cfg;
  caf::actor_system sys{cfg};
  std::vector<int> xs(1000);
  std::iota(xs.begin(), xs.end(), 0);
  std::atomic<int> sum{0};
  auto r = keel::pipeline_from(xs)
               .batch("group", 64, 5ms)
               .sink("store",
                     [&](const std::vector<int>& v) {
                       for (auto x : v)
                         sum += x;
                     })
               .run(sys);
  std::cout << r.summary();
  EXPECT_FALSE(r.error);
  EXPECT_EQ(sum.load(), 999 * 1000 / 2);
  EXPECT_EQ(r.counts.total(), r.counts.ended());
}

} // namespace
