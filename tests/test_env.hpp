// Settings of the randomised tests, read from the environment.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <random>

namespace keel_test {

/// KEEL_TEST_SEED=<n> replays a run; otherwise a fresh seed (print it).
inline uint64_t test_seed() {
  if (const char* env = std::getenv("KEEL_TEST_SEED"))
    return std::strtoull(env, nullptr, 10);
  return std::random_device{}();
}

/// Divides the work of randomised tests (KEEL_TEST_SCALE, default 1). The
/// TSan preset sets it: CAF 0.17 is not instrumented, so every message handed
/// between threads costs TSan a (suppressed) race report.
inline size_t test_scale() {
  if (const char* env = std::getenv("KEEL_TEST_SCALE"))
    return std::max<size_t>(1, std::strtoull(env, nullptr, 10));
  return 1;
}

} // namespace keel_test
