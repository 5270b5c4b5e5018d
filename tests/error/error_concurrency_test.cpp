// Errors are shared immutable trees: copies, wraps and queries from many
// threads at once must be race-free (run under TSan).

#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "keel/error.hpp"

using keel::code;

TEST(ErrorSharingConcurrency, CopiesWrapsAndQueriesAcrossThreads) {
  auto e = keel::join(keel::not_found_error("a"), keel::wrap(keel::internal_error("b"), "c"));
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([e] {
      for (int i = 0; i < 2000; ++i) {
        auto copy = e;
        auto wrapped = keel::wrap(copy, "t");
        ASSERT_TRUE(keel::is(wrapped, code::internal));
      }
    });
  for (auto& t : threads)
    t.join();
}

TEST(ErrorSharingConcurrency, LastReferencesDroppedTogetherFreeEachNodeOnce) {
  // Chains share a deep subtree; each thread drops its chain at the same time.
  // The iterative teardown must neither double-free nor leak (ASan/TSan check).
  for (int round = 0; round < 20; ++round) {
    auto shared = keel::not_found_error("shared");
    for (int i = 0; i < 500; ++i)
      shared = keel::wrap(shared, "s");
    std::vector<keel::error> chains;
    for (int t = 0; t < 4; ++t)
      chains.push_back(keel::wrap(shared, "owner " + std::to_string(t)));
    shared = keel::error{};
    std::vector<std::thread> threads;
    for (auto& c : chains)
      threads.emplace_back([c = std::move(c)]() mutable {
        ASSERT_TRUE(keel::is(c, code::not_found));
        c = keel::error{};
      });
    for (auto& t : threads)
      t.join();
  }
}
