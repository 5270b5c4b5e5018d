#pragma once

// A clock the resilience tests move by hand (no test sleeps to let time pass).

#include "keel/resilience/clock.hpp"

#include <chrono>
#include <memory>

namespace keel_test {

struct fake_clock {
  std::shared_ptr<std::chrono::steady_clock::time_point> t =
      std::make_shared<std::chrono::steady_clock::time_point>(std::chrono::hours{1});

  /// The clock to give a guard; copies share the time.
  keel::resilience_clock fn() const {
    return [t = t] { return *t; };
  }

  void advance(std::chrono::nanoseconds d) const { *t += d; }

  std::chrono::steady_clock::time_point now() const { return *t; }
};

} // namespace keel_test
