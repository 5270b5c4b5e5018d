#pragma once

// Shared by the pipeline tests: the actor system configuration, bounded
// waits, a fixture that checks that a test leaves no actor behind, and the
// accounting every run report must satisfy.
//
// Runs use CAF's real scheduler (a run blocks in `wait`, so the test
// coordinator cannot drive it). Tests never assert on durations: timeouts
// below are hang guards only.

#include "keel/error.hpp"
#include "keel/pipeline.hpp"

#include <caf/all.hpp>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <numeric>
#include <thread>
#include <vector>

namespace keel_test {

using namespace std::chrono_literals;

struct config : caf::actor_system_config {
  config() {
    keel::add_error_types(*this);
    set("scheduler.max-threads", 2);
    set("logger.file-verbosity", caf::atom("quiet"));
  }
};

/// Waits (bounded) until `done()` holds; false when it never did.
template <class F>
bool eventually(F done, std::chrono::milliseconds limit = 5s) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline)
      return false;
    std::this_thread::sleep_for(100us);
  }
  return true;
}

/// 0, 1, ..., n - 1.
inline std::vector<int> iota(int n) {
  std::vector<int> xs(static_cast<size_t>(n));
  std::iota(xs.begin(), xs.end(), 0);
  return xs;
}

/// Every item that entered the run ended exactly once, and every input was
/// either read or counted as not started.
inline void expect_accounted(const keel::run_report& r, uint64_t inputs) {
  EXPECT_EQ(r.counts.total(), r.counts.ended()) << r.summary();
  EXPECT_EQ(r.counts.lost, 0u) << r.summary();
  EXPECT_EQ(r.counts.from_source + r.counts.not_started, inputs) << r.summary();
}

/// Waits for a started run (hang guard: cancels it after `limit`).
template <class Out, class In>
keel::run_result<Out> finish(keel::run_handle<Out, In>& h, std::chrono::seconds limit = 60s) {
  if (!h.wait_for(limit)) {
    ADD_FAILURE() << "the run did not finish within " << limit.count() << " s; cancelling it";
    h.cancel();
  }
  return h.wait();
}

/// One actor system per test; on teardown, every actor the test started
/// must have terminated (runs leave none behind).
class pipeline_test : public ::testing::Test {
protected:
  void TearDown() override {
    EXPECT_TRUE(eventually([&] { return sys.registry().running() == baseline; }))
        << sys.registry().running() - baseline << " actors still running after the test";
  }

  config cfg;
  caf::actor_system sys{cfg};
  const size_t baseline = sys.registry().running();
};

} // namespace keel_test
