// The breaker actor: forwarding and replies of any type, refusal with
// circuit_open without touching the dependency, failures from errors, keel
// error values and timeouts, events to subscribers, administration, the
// half-open round trip (fake clock), and the wire form of its messages.

#include "keel/resilience/breaker_actor.hpp"

#include <atomic>
#include <memory>
#include <string>

#include <caf/all.hpp>
#include <caf/binary_deserializer.hpp>
#include <caf/binary_serializer.hpp>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "keel/error/caf.hpp"
#include "keel/testing/matchers.hpp"

namespace {

using namespace std::chrono_literals;
using keel::breaker_state;
using keel::testing::FailedWith;
using ::testing::HasSubstr;

using fail_atom = caf::atom_constant<caf::atom("t_fail")>;
using soft_atom = caf::atom_constant<caf::atom("t_soft")>;
using hang_atom = caf::atom_constant<caf::atom("t_hang")>;

struct config : caf::actor_system_config {
  config() {
    keel::add_error_types(*this);
    keel::add_breaker_types(*this);
    set("scheduler.max-threads", 2);
  }
};

/// The guarded dependency: doubles ints, fails on request, answers a keel
/// error as a value, or never answers.
caf::behavior dependency(caf::event_based_actor* self, std::shared_ptr<std::atomic<int>> calls) {
  self->set_default_handler(caf::drop);
  return {
      [=](int x) {
        ++*calls;
        return x * 2;
      },
      [=](fail_atom) -> caf::result<int> {
        ++*calls;
        return keel::to_caf_error(keel::unavailable_error("inventory down"));
      },
      [=](soft_atom, const std::string& what) {
        ++*calls;
        return what == "bad" ? keel::invalid_argument_error("bad sku")
                             : keel::unavailable_error("try later");
      },
      [=](hang_atom) -> caf::result<int> {
        ++*calls;
        return caf::delegated<int>{}; // nobody ever answers
      },
  };
}

class BreakerActor : public ::testing::Test {
protected:
  config cfg;
  caf::actor_system sys{cfg};
  std::shared_ptr<std::atomic<int>> calls = std::make_shared<std::atomic<int>>(0);
  caf::actor dep = sys.spawn(dependency, calls);
  std::shared_ptr<std::chrono::steady_clock::time_point> now =
      std::make_shared<std::chrono::steady_clock::time_point>(std::chrono::hours{1});
  caf::actor guarded;

  keel::breaker_actor_config breaker_config() {
    keel::breaker_actor_config c;
    c.breaker.name = "inventory";
    c.breaker.window_size = 4;
    c.breaker.minimum_calls = 4;
    c.breaker.open_duration = 10s;
    c.breaker.permitted_calls_in_half_open = 2;
    c.breaker.clock = [t = now] { return *t; };
    c.request_timeout = 10s;
    return c;
  }

  void spawn(keel::breaker_actor_config c) { guarded = keel::spawn_breaker_actor(sys, dep, c); }

  /// Sends `xs` to the guarded actor and returns the reply's int, or the error.
  template <class... Ts>
  keel::expected<int> ask(Ts... xs) {
    caf::scoped_actor self{sys};
    keel::expected<int> out = keel::internal_error("no reply");
    self->request(guarded, 20s, xs...)
        .receive([&](int x) { out = x; }, [&](caf::error& e) { out = keel::from_caf_error(e); });
    return out;
  }

  keel::breaker_metrics metrics() {
    caf::scoped_actor self{sys};
    keel::breaker_metrics m;
    self->request(guarded, 20s, keel::breaker_metrics_atom::value)
        .receive([&](keel::breaker_metrics& x) { m = x; },
                 [](caf::error&) { ADD_FAILURE() << "no metrics"; });
    return m;
  }

  void admin(caf::atom_value a) {
    caf::scoped_actor self{sys};
    self->request(guarded, 20s, a).receive([] {}, [](caf::error&) { ADD_FAILURE() << "admin"; });
  }

  void trip() {
    for (int i = 0; i < 4; ++i)
      EXPECT_THAT(ask(fail_atom::value), FailedWith(keel::code::unavailable));
    ASSERT_EQ(metrics().state, breaker_state::open);
  }

  ~BreakerActor() override {
    caf::anon_send_exit(guarded, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(dep, caf::exit_reason::user_shutdown);
  }
};

TEST_F(BreakerActor, ForwardsCallsAndReturnsReplies) {
  spawn(breaker_config());
  EXPECT_THAT(ask(21), keel::testing::IsOkAndHolds(42));
  EXPECT_THAT(ask(1), keel::testing::IsOkAndHolds(2));
  auto m = metrics();
  EXPECT_EQ(m.state, breaker_state::closed);
  EXPECT_EQ(m.buffered_calls, 2u);
  EXPECT_EQ(m.failed_calls, 0u);
}

TEST_F(BreakerActor, OpensAndRefusesWithoutCallingTheDependency) {
  spawn(breaker_config());
  trip();
  EXPECT_EQ(calls->load(), 4);
  auto r = ask(21);
  EXPECT_THAT(r, FailedWith(keel::resilience_code::circuit_open));
  EXPECT_THAT(std::string{r.error().message()}, HasSubstr("'inventory'"));
  EXPECT_EQ(calls->load(), 4);
  EXPECT_EQ(metrics().not_permitted_calls, 1u);
}

TEST_F(BreakerActor, KeelErrorRepliesAreRecordedAndDelivered) {
  spawn(breaker_config());
  caf::scoped_actor self{sys};
  for (auto what : {"bad", "bad", "bad", "bad"}) {
    self->request(guarded, 20s, soft_atom::value, std::string{what})
        .receive(
            [](const keel::error& e) { EXPECT_THAT(e, FailedWith(keel::code::invalid_argument)); },
            [](caf::error&) { ADD_FAILURE() << "error path"; });
  }
  auto m = metrics();
  EXPECT_EQ(m.state, breaker_state::closed) << "invalid_argument does not count";
  EXPECT_EQ(m.failed_calls, 0u);
  for (int i = 0; i < 2; ++i)
    self->request(guarded, 20s, soft_atom::value, std::string{"x"})
        .receive([](const keel::error&) {}, [](caf::error&) { ADD_FAILURE(); });
  EXPECT_EQ(metrics().state, breaker_state::open) << "2 unavailable of the last 4";
}

TEST_F(BreakerActor, TimeoutIsAFailure) {
  auto c = breaker_config();
  c.request_timeout = 50ms;
  c.breaker.window_size = 1;
  c.breaker.minimum_calls = 1;
  spawn(c);
  EXPECT_THAT(ask(hang_atom::value), FailedWith(keel::code::deadline_exceeded));
  EXPECT_EQ(metrics().state, breaker_state::open);
}

TEST_F(BreakerActor, SubscribersGetEveryStateChangeInOrder) {
  spawn(breaker_config());
  caf::scoped_actor sub{sys};
  {
    caf::scoped_actor self{sys};
    self->request(guarded, 20s, keel::breaker_subscribe_atom::value, caf::actor{sub})
        .receive([] {}, [](caf::error&) { ADD_FAILURE(); });
  }
  trip();
  *now += 10s;
  EXPECT_THAT(ask(1), keel::testing::IsOkAndHolds(2)); // half-opens, trial 1
  EXPECT_THAT(ask(2), keel::testing::IsOkAndHolds(4)); // trial 2: closes
  std::vector<keel::breaker_event> got;
  for (int i = 0; i < 3; ++i)
    sub->receive([&](const keel::breaker_event& e) { got.push_back(e); },
                 caf::after(10s) >> [] { ADD_FAILURE() << "no event"; });
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0].breaker, "inventory");
  EXPECT_EQ(got[0].to, breaker_state::open);
  EXPECT_EQ(got[0].reason, keel::transition_reason::failure_rate);
  EXPECT_EQ(got[1].to, breaker_state::half_open);
  EXPECT_EQ(got[2].from, breaker_state::half_open);
  EXPECT_EQ(got[2].to, breaker_state::closed);
  EXPECT_EQ(got[2].reason, keel::transition_reason::trial_calls_passed);
  EXPECT_EQ(got[2].sequence, 3u);
}

TEST_F(BreakerActor, HalfOpenRefusesBeyondPermittedTrials) {
  auto c = breaker_config();
  c.request_timeout = 20s;
  spawn(c);
  trip();
  *now += 10s;
  // Two trial calls that hang hold both slots; a third call is refused.
  caf::scoped_actor self{sys};
  for (int i = 0; i < 2; ++i)
    self->send(guarded, hang_atom::value);
  auto r = ask(1);
  EXPECT_THAT(r, FailedWith(keel::resilience_code::circuit_open));
  EXPECT_THAT(std::string{r.error().message()}, HasSubstr("half-open"));
  auto m = metrics();
  EXPECT_EQ(m.state, breaker_state::half_open);
  EXPECT_EQ(m.trial_calls_in_flight, 2u);
  // The hung trials never answer: after max_wait the breaker opens again.
  *now += c.breaker.max_wait_in_half_open;
  EXPECT_THAT(ask(1), FailedWith(keel::resilience_code::circuit_open));
  EXPECT_EQ(metrics().state, breaker_state::open);
}

TEST_F(BreakerActor, AdministrationMessages) {
  spawn(breaker_config());
  admin(keel::breaker_force_open_atom::value);
  EXPECT_THAT(ask(1), FailedWith(keel::resilience_code::circuit_open));
  admin(keel::breaker_reset_atom::value);
  EXPECT_THAT(ask(1), keel::testing::IsOkAndHolds(2));
  admin(keel::breaker_disable_atom::value);
  for (int i = 0; i < 8; ++i)
    (void)ask(fail_atom::value);
  EXPECT_EQ(metrics().state, breaker_state::disabled);
}

TEST_F(BreakerActor, PlainSendsAreForwardedAndRecorded) {
  spawn(breaker_config());
  caf::anon_send(guarded, 5);
  caf::anon_send(guarded, fail_atom::value);
  // Messages from one sender are handled in order: metrics after both replies
  // may still race the replies, so poll (a hang guard, not a timing check).
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (metrics().buffered_calls < 2 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(1ms);
  auto m = metrics();
  EXPECT_EQ(m.buffered_calls, 2u);
  EXPECT_EQ(m.failed_calls, 1u);
}

TEST_F(BreakerActor, RejectsInvalidConfig) {
  auto c = breaker_config();
  c.breaker.failure_rate_threshold = 0;
  EXPECT_THROW(spawn(c), std::invalid_argument);
}

TEST(BreakerActorWire, EventAndMetricsRoundTrip) {
  config cfg;
  caf::actor_system sys{cfg};
  keel::breaker_event ev{"db",
                         breaker_state::half_open,
                         breaker_state::open,
                         keel::transition_reason::max_wait_in_half_open,
                         "0 of 3",
                         7};
  keel::breaker_metrics m;
  m.state = breaker_state::half_open;
  m.failure_rate = 12.5;
  m.not_permitted_calls = 99;
  std::vector<char> buf;
  caf::binary_serializer sink{sys, buf};
  ASSERT_FALSE(sink(ev, m));
  keel::breaker_event ev2;
  keel::breaker_metrics m2;
  caf::binary_deserializer source{sys, buf};
  ASSERT_FALSE(source(ev2, m2));
  EXPECT_EQ(ev2, ev);
  EXPECT_EQ(m2.state, breaker_state::half_open);
  EXPECT_EQ(m2.failure_rate, 12.5);
  EXPECT_EQ(m2.not_permitted_calls, 99u);
}

} // namespace
