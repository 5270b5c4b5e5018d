// keel::circuit_breaker's state machine, driven by a fake clock: every
// transition, both windows, slow calls, half-open rules, administration,
// failure codes, events and JSON configuration. No test sleeps or asserts on
// durations.

#include "keel/resilience/breaker.hpp"

#include <stdexcept>
#include <string>
#include <vector>

#include <boost/json/parse.hpp>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "keel/testing/matchers.hpp"

#include "fake_clock.hpp"

namespace {

using namespace std::chrono_literals;
using keel::breaker_state;
using keel::transition_reason;
using keel::testing::FailedWith;
using keel::testing::IsOk;
using ::testing::HasSubstr;

using keel_test::fake_clock;

class Breaker : public ::testing::Test {
protected:
  fake_clock clock;
  std::vector<keel::state_change> events;

  keel::breaker_config config() {
    keel::breaker_config cfg;
    cfg.name = "payments";
    cfg.window_size = 10;
    cfg.minimum_calls = 10;
    cfg.failure_rate_threshold = 50;
    cfg.slow_call_duration = 100ms;
    cfg.slow_call_rate_threshold = 100;
    cfg.open_duration = 10s;
    cfg.permitted_calls_in_half_open = 3;
    cfg.max_wait_in_half_open = 30s;
    cfg.clock = clock.fn();
    return cfg;
  }

  std::unique_ptr<keel::circuit_breaker> make(keel::breaker_config cfg) {
    auto b = std::make_unique<keel::circuit_breaker>(std::move(cfg));
    b->on_state_change([this](const keel::state_change& e) { events.push_back(e); });
    return b;
  }

  static void succeed(keel::circuit_breaker& b, int n = 1, std::chrono::nanoseconds d = 1ms) {
    for (int i = 0; i < n; ++i) {
      auto p = b.try_acquire();
      ASSERT_THAT(p, IsOk());
      p->record_success(d);
    }
  }

  static void fail(keel::circuit_breaker& b, int n = 1, keel::code c = keel::code::unavailable) {
    for (int i = 0; i < n; ++i) {
      auto p = b.try_acquire();
      ASSERT_THAT(p, IsOk());
      p->record_failure(keel::make_error(c, "boom"), 1ms);
    }
  }

  /// Opens `b` by failures and returns after the open event.
  void trip(keel::circuit_breaker& b) {
    fail(b, static_cast<int>(b.config().window_size));
    ASSERT_EQ(b.state(), breaker_state::open);
  }

  /// Opens `b` and lets open_duration pass (still open until the next call).
  void trip_and_wait(keel::circuit_breaker& b) {
    trip(b);
    clock.advance(b.config().open_duration);
  }
};

// -- closed, count-based window ------------------------------------------------------------

TEST_F(Breaker, StartsClosedAndAdmits) {
  auto b = make(config());
  EXPECT_EQ(b->state(), breaker_state::closed);
  succeed(*b, 3);
  auto m = b->metrics();
  EXPECT_EQ(m.state, breaker_state::closed);
  EXPECT_EQ(m.buffered_calls, 3u);
  EXPECT_EQ(m.failure_rate, -1); // below minimum_calls
  EXPECT_TRUE(events.empty());
}

TEST_F(Breaker, OpensWhenFailureRateReachesThresholdAfterMinimumCalls) {
  auto b = make(config());
  fail(*b, 5);
  succeed(*b, 4);
  EXPECT_EQ(b->state(), breaker_state::closed) << "9 calls < minimum_calls 10";
  EXPECT_EQ(b->metrics().failure_rate, -1);
  succeed(*b, 1); // 5 of 10 = 50 % >= 50 %
  EXPECT_EQ(b->state(), breaker_state::open);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].from, breaker_state::closed);
  EXPECT_EQ(events[0].to, breaker_state::open);
  EXPECT_EQ(events[0].reason, transition_reason::failure_rate);
  EXPECT_THAT(events[0].detail, HasSubstr("50 % >= 50 % over 10 calls"));
  EXPECT_EQ(events[0].sequence, 1u);
}

TEST_F(Breaker, StaysClosedBelowThreshold) {
  auto b = make(config());
  fail(*b, 4);
  succeed(*b, 6);
  EXPECT_EQ(b->state(), breaker_state::closed);
  auto m = b->metrics();
  EXPECT_EQ(m.failure_rate, 40);
  EXPECT_EQ(m.failed_calls, 4u);
  EXPECT_EQ(m.buffered_calls, 10u);
}

TEST_F(Breaker, MinimumCallsIsCappedAtCountWindowSize) {
  auto cfg = config();
  cfg.window_size = 4;
  cfg.minimum_calls = 100;
  auto b = make(cfg);
  fail(*b, 3);
  EXPECT_EQ(b->state(), breaker_state::closed);
  fail(*b, 1);
  EXPECT_EQ(b->state(), breaker_state::open);
}

TEST_F(Breaker, CountWindowRollsOver) {
  auto cfg = config();
  cfg.window_size = 4;
  cfg.minimum_calls = 4;
  auto b = make(cfg);
  fail(*b, 1);
  succeed(*b, 3); // F S S S: 25 %
  EXPECT_EQ(b->metrics().failure_rate, 25);
  succeed(*b, 1); // the failure falls out: S S S S
  EXPECT_EQ(b->metrics().failure_rate, 0);
  EXPECT_EQ(b->metrics().buffered_calls, 4u);
  fail(*b, 1); // S S S F
  EXPECT_EQ(b->state(), breaker_state::closed);
  fail(*b, 1); // S S F F: 50 %
  EXPECT_EQ(b->state(), breaker_state::open);
}

// -- closed, time-based window ----------------------------------------------------------------

TEST_F(Breaker, TimeWindowForgetsOldSeconds) {
  auto cfg = config();
  cfg.window_type = keel::sliding_window::time_based;
  cfg.window_size = 10; // seconds
  cfg.minimum_calls = 4;
  auto b = make(cfg);
  fail(*b, 3);
  EXPECT_EQ(b->metrics().buffered_calls, 3u);
  clock.advance(5s);
  EXPECT_EQ(b->metrics().buffered_calls, 3u) << "still inside the 10 s window";
  clock.advance(6s); // the failures' second is out of the window now
  EXPECT_EQ(b->metrics().buffered_calls, 0u);
  succeed(*b, 3);
  fail(*b, 1); // 1 of 4
  EXPECT_EQ(b->state(), breaker_state::closed);
  EXPECT_EQ(b->metrics().failure_rate, 25);
}

TEST_F(Breaker, TimeWindowKeepsRecentSecondsAcrossRollover) {
  auto cfg = config();
  cfg.window_type = keel::sliding_window::time_based;
  cfg.window_size = 3;
  cfg.minimum_calls = 4;
  auto b = make(cfg);
  succeed(*b, 2); // second 0
  clock.advance(1s);
  fail(*b, 1); // second 1
  clock.advance(1s);
  fail(*b, 1); // second 2: S S F F = 50 %, opens
  EXPECT_EQ(b->state(), breaker_state::open);

  auto b2 = make(cfg);
  succeed(*b2, 2); // second s
  clock.advance(3s);
  fail(*b2, 1); // s + 3: the successes fell out
  fail(*b2, 1);
  EXPECT_EQ(b2->metrics().buffered_calls, 2u);
  EXPECT_EQ(b2->state(), breaker_state::closed) << "2 calls < minimum 4";
  clock.advance(1s);
  succeed(*b2, 1);
  fail(*b2, 1); // F F S F = 75 %
  EXPECT_EQ(b2->state(), breaker_state::open);
}

TEST_F(Breaker, TimeWindowLongIdleClearsEverything) {
  auto cfg = config();
  cfg.window_type = keel::sliding_window::time_based;
  cfg.window_size = 5;
  cfg.minimum_calls = 2;
  auto b = make(cfg);
  fail(*b, 1);
  clock.advance(10h);
  succeed(*b, 1);
  EXPECT_EQ(b->metrics().failed_calls, 0u);
  EXPECT_EQ(b->metrics().buffered_calls, 1u);
}

// -- slow calls and consecutive failures --------------------------------------------------------

TEST_F(Breaker, OpensOnSlowCallRate) {
  auto cfg = config();
  cfg.window_size = 4;
  cfg.minimum_calls = 4;
  cfg.slow_call_rate_threshold = 50;
  auto b = make(cfg);
  succeed(*b, 2, 1ms);
  succeed(*b, 1, 100ms); // exactly the threshold counts as slow
  EXPECT_EQ(b->state(), breaker_state::closed);
  succeed(*b, 1, 5s);
  EXPECT_EQ(b->state(), breaker_state::open);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].reason, transition_reason::slow_call_rate);
}

TEST_F(Breaker, SlowFailuresCountForBothRates) {
  auto cfg = config();
  cfg.window_size = 2;
  cfg.minimum_calls = 2;
  cfg.failure_rate_threshold = 100;
  cfg.slow_call_rate_threshold = 100;
  auto b = make(cfg);
  for (int i = 0; i < 2; ++i) {
    auto p = b->try_acquire();
    ASSERT_THAT(p, IsOk());
    p->record_failure(keel::internal_error("x"), 1s);
  }
  EXPECT_EQ(b->state(), breaker_state::open);
  EXPECT_EQ(events.at(0).reason, transition_reason::failure_rate); // checked first
}

TEST_F(Breaker, OpensOnConsecutiveFailures) {
  auto cfg = config();
  cfg.window_size = 100;
  cfg.minimum_calls = 100;
  cfg.consecutive_failures = 3;
  auto b = make(cfg);
  fail(*b, 2);
  succeed(*b, 1); // resets the run
  fail(*b, 2);
  EXPECT_EQ(b->state(), breaker_state::closed);
  fail(*b, 1);
  EXPECT_EQ(b->state(), breaker_state::open);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].reason, transition_reason::consecutive_failures);
}

// -- open
// ------------------------------------------------------------------------------------------

TEST_F(Breaker, OpenRefusesAtOnceNamingBreakerAndTime) {
  auto b = make(config());
  trip(*b);
  int calls = 0;
  auto r = b->call([&] {
    ++calls;
    return 1;
  });
  EXPECT_EQ(calls, 0);
  EXPECT_THAT(r, FailedWith(keel::resilience_code::circuit_open));
  EXPECT_THAT(r, FailedWith(keel::code::unavailable)); // canonical code
  EXPECT_THAT(r.error().message(), HasSubstr("'payments'"));
  EXPECT_THAT(r.error().message(), HasSubstr("is open"));
  EXPECT_THAT(r.error().message(), HasSubstr("for another 10s"));
  clock.advance(4s);
  auto r2 = b->try_acquire();
  EXPECT_THAT(r2.error().message(), HasSubstr("for another 6s"));
  EXPECT_EQ(b->metrics().not_permitted_calls, 2u);
}

TEST_F(Breaker, HalfOpensOnFirstCallAfterOpenDuration) {
  auto b = make(config());
  trip(*b);
  clock.advance(10s - 1ns);
  EXPECT_THAT(b->try_acquire(), FailedWith(keel::resilience_code::circuit_open));
  EXPECT_EQ(b->state(), breaker_state::open);
  clock.advance(1ns);
  EXPECT_EQ(b->state(), breaker_state::open) << "no timer: the next call half-opens";
  auto p = b->try_acquire();
  ASSERT_THAT(p, IsOk());
  EXPECT_EQ(b->state(), breaker_state::half_open);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[1].from, breaker_state::open);
  EXPECT_EQ(events[1].to, breaker_state::half_open);
  EXPECT_EQ(events[1].reason, transition_reason::open_duration_elapsed);
}

// -- half-open
// -------------------------------------------------------------------------------------

TEST_F(Breaker, HalfOpenAdmitsExactlyPermittedCallsThenCloses) {
  auto b = make(config());
  trip_and_wait(*b);
  std::vector<keel::breaker_permit> trials;
  for (int i = 0; i < 3; ++i) {
    auto p = b->try_acquire();
    ASSERT_THAT(p, IsOk());
    trials.push_back(std::move(*p));
  }
  auto extra = b->try_acquire();
  EXPECT_THAT(extra, FailedWith(keel::resilience_code::circuit_open));
  EXPECT_THAT(extra.error().message(), HasSubstr("half-open"));
  EXPECT_EQ(b->metrics().trial_calls_in_flight, 3u);
  trials[0].record_success(1ms);
  trials[1].record_success(1ms);
  EXPECT_EQ(b->state(), breaker_state::half_open);
  EXPECT_THAT(b->try_acquire(), FailedWith(keel::resilience_code::circuit_open))
      << "a recorded trial does not free a slot";
  trials[2].record_success(1ms);
  EXPECT_EQ(b->state(), breaker_state::closed);
  EXPECT_EQ(events.back().reason, transition_reason::trial_calls_passed);
  auto m = b->metrics();
  EXPECT_EQ(m.buffered_calls, 0u) << "closing starts an empty window";
  succeed(*b, 1);
}

TEST_F(Breaker, HalfOpenReopensWhenTrialsFail) {
  auto b = make(config());
  trip_and_wait(*b);
  succeed(*b, 1);
  fail(*b, 1);
  EXPECT_EQ(b->state(), breaker_state::half_open);
  EXPECT_EQ(b->metrics().failure_rate, 50);
  fail(*b, 1); // 2 of 3
  EXPECT_EQ(b->state(), breaker_state::open);
  EXPECT_EQ(events.back().reason, transition_reason::trial_calls_failed);
  // Open for a full open_duration again.
  clock.advance(10s - 1ns);
  EXPECT_THAT(b->try_acquire(), FailedWith(keel::resilience_code::circuit_open));
  clock.advance(1ns);
  EXPECT_THAT(b->try_acquire(), IsOk());
}

TEST_F(Breaker, HalfOpenReopensOnSlowTrials) {
  auto cfg = config();
  cfg.permitted_calls_in_half_open = 2;
  cfg.slow_call_rate_threshold = 50;
  auto b = make(cfg);
  trip_and_wait(*b);
  succeed(*b, 1, 1ms);
  succeed(*b, 1, 1s);
  EXPECT_EQ(b->state(), breaker_state::open);
  EXPECT_EQ(events.back().reason, transition_reason::trial_calls_failed);
  EXPECT_THAT(events.back().detail, HasSubstr("slow-call rate"));
}

TEST_F(Breaker, DroppedPermitFreesItsHalfOpenSlot) {
  auto cfg = config();
  cfg.permitted_calls_in_half_open = 1;
  auto b = make(cfg);
  trip_and_wait(*b);
  {
    auto p = b->try_acquire();
    ASSERT_THAT(p, IsOk());
    EXPECT_THAT(b->try_acquire(), FailedWith(keel::resilience_code::circuit_open));
  } // dropped without an outcome
  EXPECT_EQ(b->metrics().ignored_calls, 1u);
  auto p = b->try_acquire();
  ASSERT_THAT(p, IsOk());
  p->release();
  EXPECT_FALSE(p->active());
  p->record_success(1ms); // after release: no effect
  EXPECT_EQ(b->state(), breaker_state::half_open);
  succeed(*b, 1);
  EXPECT_EQ(b->state(), breaker_state::closed);
}

TEST_F(Breaker, MovedPermitRecordsOnce) {
  auto cfg = config();
  cfg.permitted_calls_in_half_open = 1;
  auto b = make(cfg);
  trip_and_wait(*b);
  auto p = b->try_acquire();
  ASSERT_THAT(p, IsOk());
  keel::breaker_permit q = std::move(*p);
  EXPECT_FALSE(p->active());
  EXPECT_TRUE(q.active());
  keel::breaker_permit r;
  r = std::move(q);
  r.record_success(1ms);
  EXPECT_EQ(b->state(), breaker_state::closed);
}

TEST_F(Breaker, MaxWaitInHalfOpenEscapesStuckHalfOpen) {
  auto b = make(config());
  trip_and_wait(*b);
  // Every trial slot is taken and no outcome ever arrives (lost replies).
  std::vector<keel::breaker_permit> lost;
  for (int i = 0; i < 3; ++i)
    lost.push_back(std::move(*b->try_acquire()));
  clock.advance(30s - 1ns);
  EXPECT_THAT(b->try_acquire(), FailedWith(keel::resilience_code::circuit_open));
  EXPECT_EQ(b->state(), breaker_state::half_open);
  clock.advance(1ns);
  auto r = b->try_acquire();
  EXPECT_THAT(r, FailedWith(keel::resilience_code::circuit_open));
  EXPECT_THAT(r.error().message(), HasSubstr("is open"));
  EXPECT_EQ(b->state(), breaker_state::open);
  EXPECT_EQ(events.back().reason, transition_reason::max_wait_in_half_open);
  EXPECT_THAT(events.back().detail, HasSubstr("0 of 3"));
  // The late outcomes belong to the ended round: ignored.
  for (auto& p : lost)
    p.record_success(1ms);
  EXPECT_EQ(b->state(), breaker_state::open);
  EXPECT_EQ(b->metrics().ignored_calls, 3u);
  // The next round has all its slots.
  clock.advance(10s);
  succeed(*b, 3);
  EXPECT_EQ(b->state(), breaker_state::closed);
}

TEST_F(Breaker, MaxWaitAlsoEndsAPartlyRecordedRound) {
  auto b = make(config());
  trip_and_wait(*b);
  succeed(*b, 2);
  auto stuck = b->try_acquire();
  ASSERT_THAT(stuck, IsOk());
  clock.advance(30s);
  EXPECT_THAT(b->try_acquire(), FailedWith(keel::resilience_code::circuit_open));
  EXPECT_EQ(b->state(), breaker_state::open);
  EXPECT_THAT(events.back().detail, HasSubstr("2 of 3"));
}

TEST_F(Breaker, StaleClosedOutcomeIsIgnoredAfterOpening) {
  auto cfg = config();
  cfg.permitted_calls_in_half_open = 1;
  auto b = make(cfg);
  auto slow = b->try_acquire(); // admitted while closed
  ASSERT_THAT(slow, IsOk());
  trip_and_wait(*b);
  auto trial = b->try_acquire();
  ASSERT_THAT(trial, IsOk());
  EXPECT_EQ(b->state(), breaker_state::half_open);
  slow->record_failure(keel::unavailable_error("late"), 1ms);
  EXPECT_EQ(b->state(), breaker_state::half_open) << "a closed-state call is no trial";
  trial->record_success(1ms);
  EXPECT_EQ(b->state(), breaker_state::closed);
}

// -- administration
// -----------------------------------------------------------------------------------

TEST_F(Breaker, ForcedOpenRefusesUntilReset) {
  auto b = make(config());
  b->force_open();
  EXPECT_EQ(b->state(), breaker_state::forced_open);
  auto r = b->try_acquire();
  EXPECT_THAT(r, FailedWith(keel::resilience_code::circuit_open));
  EXPECT_THAT(r.error().message(), HasSubstr("forced open"));
  clock.advance(10h);
  EXPECT_THAT(b->try_acquire(), FailedWith(keel::resilience_code::circuit_open));
  b->reset();
  EXPECT_EQ(b->state(), breaker_state::closed);
  succeed(*b, 1);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].reason, transition_reason::forced_open);
  EXPECT_EQ(events[1].reason, transition_reason::reset);
  EXPECT_EQ(events[1].from, breaker_state::forced_open);
}

TEST_F(Breaker, DisabledAdmitsAndRecordsNothing) {
  auto b = make(config());
  fail(*b, 3);
  b->disable();
  fail(*b, 50);
  EXPECT_EQ(b->state(), breaker_state::disabled);
  EXPECT_EQ(b->metrics().buffered_calls, 0u);
  b->reset();
  EXPECT_EQ(b->metrics().buffered_calls, 0u) << "reset empties the window";
  EXPECT_EQ(b->state(), breaker_state::closed);
}

TEST_F(Breaker, ResetWhileOpenOrHalfOpenCloses) {
  auto b = make(config());
  trip(*b);
  b->reset();
  EXPECT_EQ(b->state(), breaker_state::closed);
  trip_and_wait(*b);
  auto p = b->try_acquire();
  ASSERT_THAT(p, IsOk());
  b->reset();
  EXPECT_EQ(b->state(), breaker_state::closed);
  p->record_failure(keel::unavailable_error("x"), 1ms); // from the ended round
  EXPECT_EQ(b->metrics().buffered_calls, 0u);
  b->reset(); // closed -> closed: no event
  EXPECT_EQ(events.back().reason, transition_reason::reset);
  EXPECT_EQ(events.size(), 5u); // open, reset, open, half_open, reset
}

TEST_F(Breaker, ForceOpenAndDisableAreIdempotent) {
  auto b = make(config());
  b->force_open();
  b->force_open();
  b->disable();
  b->disable();
  EXPECT_EQ(events.size(), 2u);
}

// -- failure codes
// -----------------------------------------------------------------------------------

TEST_F(Breaker, DefaultFailureCodes) {
  using keel::code;
  for (auto c : {code::unavailable, code::resource_exhausted, code::deadline_exceeded,
                 code::internal, code::unknown, code::panic})
    EXPECT_TRUE(keel::default_is_failure(keel::make_error(c, "x"))) << c;
  for (auto c :
       {code::invalid_argument, code::not_found, code::already_exists, code::permission_denied,
        code::failed_precondition, code::aborted, code::out_of_range, code::unimplemented,
        code::unauthenticated, code::cancelled, code::data_loss})
    EXPECT_FALSE(keel::default_is_failure(keel::make_error(c, "x"))) << c;
  EXPECT_FALSE(keel::default_is_failure(keel::error{}));
  EXPECT_TRUE(keel::default_is_failure(keel::wrap(keel::unavailable_error("db"), "query")));
}

TEST_F(Breaker, ErrorsThatDoNotCountAreSuccesses) {
  auto b = make(config());
  fail(*b, 10, keel::code::invalid_argument);
  EXPECT_EQ(b->state(), breaker_state::closed);
  auto m = b->metrics();
  EXPECT_EQ(m.buffered_calls, 10u);
  EXPECT_EQ(m.failed_calls, 0u);
  EXPECT_EQ(m.failure_rate, 0);
}

TEST_F(Breaker, CustomFailureCodes) {
  auto cfg = config();
  cfg.window_size = 2;
  cfg.minimum_calls = 2;
  cfg.failure_rate_threshold = 100;
  cfg.is_failure = keel::failure_codes({keel::code::not_found});
  auto b = make(cfg);
  fail(*b, 2, keel::code::unavailable);
  EXPECT_EQ(b->state(), breaker_state::closed);
  fail(*b, 1, keel::code::not_found);
  EXPECT_EQ(b->state(), breaker_state::closed);
  fail(*b, 1, keel::code::not_found);
  EXPECT_EQ(b->state(), breaker_state::open);
}

// -- call()
// ---------------------------------------------------------------------------------------------

TEST_F(Breaker, CallRecordsEveryResultShape) {
  auto cfg = config();
  cfg.window_size = 100;
  cfg.minimum_calls = 100;
  auto b = make(cfg);
  keel::expected<int> a = b->call([] { return 7; });
  EXPECT_THAT(a, keel::testing::IsOkAndHolds(7));
  keel::expected<int> e =
      b->call([]() -> keel::expected<int> { return keel::unavailable_error("x"); });
  EXPECT_THAT(e, FailedWith(keel::code::unavailable));
  keel::error err = b->call([] { return keel::internal_error("y"); });
  EXPECT_THAT(err, FailedWith(keel::code::internal));
  keel::error ok = b->call([] { return keel::error{}; });
  EXPECT_FALSE(ok);
  int n = 0;
  keel::expected<void> v = b->call([&] { ++n; });
  EXPECT_TRUE(v.has_value());
  EXPECT_EQ(n, 1);
  auto m = b->metrics();
  EXPECT_EQ(m.buffered_calls, 5u);
  EXPECT_EQ(m.failed_calls, 2u);
}

TEST_F(Breaker, CallTimesWithTheBreakersClock) {
  auto cfg = config();
  cfg.window_size = 1;
  cfg.minimum_calls = 1;
  cfg.slow_call_rate_threshold = 100;
  auto b = make(cfg);
  (void)b->call([&] {
    clock.advance(99ms);
    return 1;
  });
  EXPECT_EQ(b->metrics().slow_calls, 0u);
  (void)b->call([&] {
    clock.advance(100ms);
    return 1;
  });
  EXPECT_EQ(b->state(), breaker_state::open);
  EXPECT_EQ(events.back().reason, transition_reason::slow_call_rate);
}

TEST_F(Breaker, CallRecordsAnExceptionAsPanicAndRethrows) {
  auto cfg = config();
  cfg.window_size = 1;
  cfg.minimum_calls = 1;
  auto b = make(cfg);
  EXPECT_THROW((void)b->call([]() -> int { throw std::runtime_error("kaput"); }),
               std::runtime_error);
  EXPECT_EQ(b->state(), breaker_state::open);
}

// -- events
// ---------------------------------------------------------------------------------------------

TEST_F(Breaker, ListenerRunsOutsideTheLockAndMayCallBack) {
  auto b = make(config());
  std::vector<breaker_state> seen;
  b->on_state_change([&](const keel::state_change& e) {
    seen.push_back(b->metrics().state); // would deadlock under the lock
    if (e.to == breaker_state::open)
      b->reset();
  });
  fail(*b, 10);
  // open was reported, the listener reset it, and that was reported too.
  EXPECT_EQ(b->state(), breaker_state::closed);
  ASSERT_EQ(seen.size(), 2u);
  b->on_state_change(nullptr);
  b->force_open();
  EXPECT_EQ(seen.size(), 2u);
}

TEST_F(Breaker, EventSequenceNumbersIncrease) {
  auto b = make(config());
  trip_and_wait(*b);
  succeed(*b, 3);
  b->disable();
  ASSERT_EQ(events.size(), 4u);
  for (size_t i = 0; i < events.size(); ++i)
    EXPECT_EQ(events[i].sequence, i + 1);
  EXPECT_EQ(b->metrics().transitions, 4u);
}

TEST(BreakerNames, EnumsHaveNames) {
  EXPECT_EQ(keel::to_string(breaker_state::half_open), "half_open");
  EXPECT_EQ(keel::to_string(breaker_state::forced_open), "forced_open");
  EXPECT_EQ(keel::to_string(transition_reason::max_wait_in_half_open), "max_wait_in_half_open");
  EXPECT_EQ(keel::to_string(keel::sliding_window::time_based), "time_based");
}

// -- configuration
// --------------------------------------------------------------------------------------

TEST(BreakerConfig, DefaultsAreValid) {
  keel::breaker_config cfg;
  EXPECT_FALSE(keel::validate(cfg));
  EXPECT_GT(cfg.max_wait_in_half_open, std::chrono::nanoseconds::zero());
  keel::circuit_breaker b; // uses the real clock
  EXPECT_THAT(b.try_acquire(), IsOk());
}

TEST(BreakerConfig, ConstructorRejectsInvalidConfig) {
  keel::breaker_config cfg;
  cfg.permitted_calls_in_half_open = 0;
  EXPECT_THROW(keel::circuit_breaker{cfg}, std::invalid_argument);
}

TEST(BreakerConfig, ReadsEveryFieldFromJson) {
  auto v = boost::json::parse(R"({
    "name": "payments", "window_type": "time_based", "window_size": 30,
    "failure_rate_threshold": 40.5, "slow_call_duration_ms": 2000,
    "slow_call_rate_threshold": 80, "minimum_calls": 20, "consecutive_failures": 5,
    "open_duration_ms": 10000, "permitted_calls_in_half_open": 3,
    "max_wait_in_half_open_ms": 30000.5, "failure_codes": ["unavailable", "not_found"]})");
  auto cfg = keel::breaker_config_from_json(v);
  ASSERT_THAT(cfg, IsOk());
  EXPECT_EQ(cfg->name, "payments");
  EXPECT_EQ(cfg->window_type, keel::sliding_window::time_based);
  EXPECT_EQ(cfg->window_size, 30u);
  EXPECT_EQ(cfg->failure_rate_threshold, 40.5);
  EXPECT_EQ(cfg->slow_call_duration, 2s);
  EXPECT_EQ(cfg->slow_call_rate_threshold, 80);
  EXPECT_EQ(cfg->minimum_calls, 20u);
  EXPECT_EQ(cfg->consecutive_failures, 5u);
  EXPECT_EQ(cfg->open_duration, 10s);
  EXPECT_EQ(cfg->permitted_calls_in_half_open, 3u);
  EXPECT_EQ(cfg->max_wait_in_half_open, 30000500us);
  ASSERT_TRUE(cfg->is_failure);
  EXPECT_TRUE(cfg->is_failure(keel::not_found_error("x")));
  EXPECT_FALSE(cfg->is_failure(keel::internal_error("x")));
}

TEST(BreakerConfig, AbsentFieldsKeepTheBase) {
  keel::breaker_config base;
  base.window_size = 7;
  base.minimum_calls = 3;
  auto cfg = keel::breaker_config_from_json(boost::json::parse(R"({"name": "x"})"), base);
  ASSERT_THAT(cfg, IsOk());
  EXPECT_EQ(cfg->window_size, 7u);
  EXPECT_EQ(cfg->minimum_calls, 3u);
  EXPECT_FALSE(cfg->is_failure);
}

TEST(BreakerConfig, JsonErrorsNameTheField) {
  struct bad_case {
    const char* json;
    const char* message;
  };
  const bad_case cases[] = {
      {R"({"failure_rate_threshold": 0})",
       "breaker.failure_rate_threshold: expected a number in (0, 100], got 0"},
      {R"({"failure_rate_threshold": 101})",
       "breaker.failure_rate_threshold: expected a number in (0, 100], got 101"},
      {R"({"failure_rate_threshold": "50"})", "breaker.failure_rate_threshold: expected a number"},
      {R"({"slow_call_rate_threshold": -1})", "breaker.slow_call_rate_threshold: expected"},
      {R"({"window_type": "sliding"})", "breaker.window_type: expected \"count_based\""},
      {R"({"window_size": 0})", "breaker.window_size: expected an integer in 1..1000000"},
      {R"({"window_type": "time_based", "window_size": 7200})",
       "breaker.window_size: expected an integer in 1..3600 (seconds), got 7200"},
      {R"({"window_size": -3})", "breaker.window_size: expected an integer"},
      {R"({"minimum_calls": 0})", "breaker.minimum_calls: expected an integer >= 1, got 0"},
      {R"({"permitted_calls_in_half_open": 0})", "breaker.permitted_calls_in_half_open"},
      {R"({"open_duration_ms": 0})", "breaker.open_duration_ms: expected a number of milliseconds"},
      {R"({"max_wait_in_half_open_ms": 0})", "breaker.max_wait_in_half_open_ms: expected"},
      {R"({"slow_call_duration_ms": true})", "breaker.slow_call_duration_ms: expected"},
      {R"({"failure_codes": "unavailable"})", "breaker.failure_codes: expected an array"},
      {R"({"failure_codes": ["unavailable", "flaky"]})",
       "breaker.failure_codes[1]: unknown code \"flaky\""},
      {R"({"name": 3})", "breaker.name: expected"},
      {R"({"windowsize": 3})", "breaker: unknown field 'windowsize'"},
      {R"([1])", "breaker: expected an object"},
  };
  for (const auto& c : cases) {
    auto cfg = keel::breaker_config_from_json(boost::json::parse(c.json));
    ASSERT_FALSE(cfg.has_value()) << c.json;
    EXPECT_THAT(cfg, FailedWith(keel::code::invalid_argument)) << c.json;
    EXPECT_THAT(std::string{cfg.error().message()}, HasSubstr(c.message)) << c.json;
  }
}

TEST(BreakerConfig, ValidateNamesTheField) {
  keel::breaker_config cfg;
  cfg.max_wait_in_half_open = std::chrono::nanoseconds::zero();
  auto err = keel::validate(cfg, "stages.fetch.breaker");
  EXPECT_THAT(std::string{err.message()},
              HasSubstr("stages.fetch.breaker.max_wait_in_half_open: expected a duration > 0"));
}

} // namespace
