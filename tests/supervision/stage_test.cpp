// Deterministic tests of stages: retries and quarantine, dead letters, the
// stash, backoff timing, events, failures outside handlers, start-up failures
// and typed stages.

#include "helpers.hpp"

#include <memory>

using namespace std::chrono_literals;
using namespace keel::testing;
using keel::directive;
using keel::event_kind;

namespace {

class StageTest : public supervision_test {
protected:
  keel::supervisor_config root_config() { return supervision_test::root_config({100, 1min}); }

  /// The delays of the `restarted` events about `child`, in order.
  std::vector<std::chrono::nanoseconds> delays_of(std::string_view child) {
    std::vector<std::chrono::nanoseconds> out;
    for (auto& e : events_of(*rec, event_kind::restarted, child))
      out.push_back(e.delay);
    return out;
  }
};

// -- retries, quarantine, dead letters ------------------------------------------

TEST_F(StageTest, MessageIsQuarantinedAfterMaxAttemptsWithAFullDeadLetter) {
  auto p = std::make_shared<probe>();
  auto sc = root_config();
  sc.children.push_back(doubler("d", p).with_max_attempts(3));
  auto sup = start(sc);
  auto d = lookup(sup, "d").value();
  auto r = ask<int>(d, -7);
  EXPECT_THAT(r, FailedWith(keel::code::panic, ::testing::HasSubstr("negative: -7")));
  EXPECT_EQ(p->seen, (std::vector<int>{-7, -7, -7}));
  auto letters = dead->entries();
  ASSERT_EQ(letters.size(), 1u);
  const auto& l = letters[0];
  EXPECT_EQ(l.stage, "root/d");
  EXPECT_EQ(l.attempts, 3u);
  EXPECT_TRUE(l.was_request);
  ASSERT_TRUE(l.payload.match_elements<int>());
  EXPECT_EQ(l.payload.get_as<int>(0), -7);
  EXPECT_THAT(l.error, FailedWith(keel::code::panic));
  EXPECT_THAT(l.error, HasDetail<keel::stage_info>(
                           ::testing::AllOf(::testing::Field(&keel::stage_info::stage, "root/d"),
                                            ::testing::Field(&keel::stage_info::attempt, 3u))));
  auto q = events_of(*rec, event_kind::quarantined, "root/d");
  ASSERT_EQ(q.size(), 1u);
  EXPECT_EQ(q[0].attempt, 3u);
  EXPECT_EQ(q[0].supervisor, "root");
  // The stage goes on with the next message.
  EXPECT_EQ(ask<int>(d, 4).value(), 8);
}

TEST_F(StageTest, ErrorReturnIsRetriedAndQuarantinedLikeAnException) {
  auto p = std::make_shared<probe>();
  auto sc = root_config();
  sc.children.push_back(doubler("d", p).with_max_attempts(2));
  auto sup = start(sc);
  auto d = lookup(sup, "d").value();
  EXPECT_THAT(ask<int>(d, 0), FailedWith(keel::code::invalid_argument));
  EXPECT_EQ(p->seen, (std::vector<int>{0, 0}));
  auto letters = dead->entries();
  ASSERT_EQ(letters.size(), 1u);
  EXPECT_EQ(letters[0].attempts, 2u);
  EXPECT_THAT(letters[0].error, FailedWith(keel::code::invalid_argument));
  EXPECT_EQ(rec->count(event_kind::failed, "root/d"), 2u);
}

TEST_F(StageTest, QuarantinedOneWayMessageIsADeadLetterWithoutRequester) {
  auto p = std::make_shared<probe>();
  auto sc = root_config();
  sc.children.push_back(doubler("d", p).with_max_attempts(2));
  auto sup = start(sc);
  tell(lookup(sup, "d").value(), -3);
  auto letters = dead->entries();
  ASSERT_EQ(letters.size(), 1u);
  EXPECT_FALSE(letters[0].was_request);
  EXPECT_EQ(letters[0].attempts, 2u);
  EXPECT_EQ(letters[0].payload.get_as<int>(0), -3);
}

TEST_F(StageTest, UnhandledMessageGetsUnimplementedAndIsADeadLetter) {
  auto p = std::make_shared<probe>();
  auto sc = root_config();
  sc.children.push_back(doubler("d", p));
  auto sup = start(sc);
  auto d = lookup(sup, "d").value();
  EXPECT_THAT(ask<int>(d, std::string{"hello"}), FailedWith(keel::code::unimplemented));
  auto letters = dead->entries();
  ASSERT_EQ(letters.size(), 1u);
  EXPECT_EQ(letters[0].stage, "root/d");
  EXPECT_TRUE(letters[0].was_request);
  ASSERT_TRUE(letters[0].payload.match_elements<std::string>());
  EXPECT_EQ(letters[0].payload.get_as<std::string>(0), "hello");
  EXPECT_THAT(letters[0].error, FailedWith(keel::code::unimplemented));
  EXPECT_EQ(rec->count(event_kind::undeliverable, "root/d"), 1u);
  // Not a failure: nothing restarted.
  EXPECT_EQ(rec->count(event_kind::failed), 0u);
  EXPECT_EQ(p->starts, 1);
  EXPECT_EQ(ask<int>(d, 1).value(), 2);
}

// -- events ---------------------------------------------------------------------

TEST_F(StageTest, FailureAndRestartEventsAreRecordedInOrder) {
  auto p = std::make_shared<probe>();
  auto sc = root_config();
  sc.backoff = {.min = 10ms, .max = 1s};
  sc.children.push_back(accumulator("acc", p));
  auto sup = start(sc);
  auto replies = request_all(lookup(sup, "acc").value(), {13});
  run();
  advance(10ms);
  EXPECT_EQ(replies->lines, (std::vector<std::string>{"13=>13"}));
  EXPECT_EQ(kinds_of(*rec, "root/acc"),
            (std::vector<event_kind>{event_kind::started, event_kind::failed, event_kind::restarted,
                                     event_kind::started}));
  auto started = events_of(*rec, event_kind::started, "root/acc");
  ASSERT_EQ(started.size(), 2u);
  EXPECT_EQ(started[0].attempt, 0u);
  EXPECT_EQ(started[1].attempt, 1u);
  auto failed = events_of(*rec, event_kind::failed, "root/acc");
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_EQ(failed[0].supervisor, "root");
  EXPECT_EQ(failed[0].decision, directive::restart);
  EXPECT_THAT(failed[0].error,
              HasDetail<keel::panic_info>(::testing::Field(&keel::panic_info::what, "unlucky 13")));
  EXPECT_THAT(failed[0].error,
              HasDetail<keel::stage_info>(::testing::Field(&keel::stage_info::attempt, 1u)));
  auto restarted = events_of(*rec, event_kind::restarted, "root/acc");
  ASSERT_EQ(restarted.size(), 1u);
  EXPECT_EQ(restarted[0].attempt, 1u);
  EXPECT_EQ(restarted[0].delay, 10ms);
  EXPECT_THAT(keel::to_string(restarted[0]), ::testing::HasSubstr("root/acc restarted #1"));
}

// -- failures outside handlers --------------------------------------------------

/// A stage that forwards ints to `target` and checks the answer in a
/// continuation: a negative answer fails the stage, through `ctx.fail` or (with
/// `guarded`) by throwing inside `ctx.guard`.
keel::child_spec checker(std::string id, caf::actor target, std::shared_ptr<probe> p,
                         bool guarded) {
  return keel::stage_spec(std::move(id), [target, p, guarded](keel::stage_context& ctx) {
    ++p->starts;
    return caf::behavior{[target, p, guarded, &ctx](int x) {
      p->seen.push_back(x);
      auto check = [p](int y) {
        if (y < 0)
          throw std::runtime_error("negative echo");
        ++p->handled;
      };
      if (guarded) {
        ctx.self()->request(target, caf::infinite, x).then(ctx.guard(check));
      } else {
        ctx.self()->request(target, caf::infinite, x).then([&ctx, p](int y) {
          if (y < 0)
            ctx.fail(keel::data_loss_error("negative echo"));
          else
            ++p->handled;
        });
      }
    }};
  });
}

TEST_F(StageTest, FailFromAContinuationRestartsTheStageInPlace) {
  auto p = std::make_shared<probe>();
  auto sc = root_config();
  sc.children.push_back(checker("c", echo(), p, false));
  auto sup = start(sc);
  auto c = lookup(sup, "c").value();
  tell(c, -5);
  auto failed = events_of(*rec, event_kind::failed, "root/c");
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_THAT(failed[0].error, FailedWith(keel::code::data_loss));
  EXPECT_THAT(failed[0].error,
              HasDetail<keel::stage_info>(::testing::Field(&keel::stage_info::stage, "root/c")));
  EXPECT_EQ(p->starts, 2);
  EXPECT_EQ(p->seen, (std::vector<int>{-5})); // no message to retry
  EXPECT_EQ(lookup(sup, "c").value(), c);
  tell(c, 5);
  EXPECT_EQ(p->handled, 1);
}

TEST_F(StageTest, GuardTurnsAnExceptionInAContinuationIntoAPanicFailure) {
  auto p = std::make_shared<probe>();
  auto sc = root_config();
  sc.children.push_back(checker("c", echo(), p, true));
  auto sup = start(sc);
  auto c = lookup(sup, "c").value();
  tell(c, -5);
  auto failed = events_of(*rec, event_kind::failed, "root/c");
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_THAT(failed[0].error, FailedWith(keel::code::panic));
  EXPECT_THAT(failed[0].error, HasDetail<keel::panic_info>(
                                   ::testing::Field(&keel::panic_info::what, "negative echo")));
  EXPECT_EQ(p->starts, 2);
  EXPECT_EQ(lookup(sup, "c").value(), c); // restarted in place, not crashed
  tell(c, 5);
  EXPECT_EQ(p->handled, 1);
}

TEST_F(StageTest, UnguardedExceptionInAContinuationRestartsTheStage) {
  auto p = std::make_shared<probe>();
  auto target = echo();
  auto sc = root_config();
  sc.children.push_back(keel::stage_spec("c", [p, target](keel::stage_context& ctx) {
    ++p->starts;
    return caf::behavior{[target, &ctx](int x) {
      ctx.self()->request(target, caf::infinite, x).then([](int y) {
        if (y < 0)
          throw std::runtime_error("unguarded");
      });
    }};
  }));
  auto sup = start(sc);
  tell(lookup(sup, "c").value(), -1);
  // The cell cannot go on; it is replaced, and the failure is still a panic.
  auto failed = events_of(*rec, event_kind::failed, "root/c");
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_THAT(failed[0].error, FailedWith(keel::code::panic, ::testing::HasSubstr("unguarded")));
  EXPECT_EQ(p->starts, 2);
  auto c = lookup(sup, "c");
  ASSERT_TRUE(c.has_value());
  tell(*c, 1);
  EXPECT_EQ(rec->count(event_kind::failed, "root/c"), 1u);
}

// -- stash ------------------------------------------------------------------------

TEST_F(StageTest, StashKeepsTheOrderDuringABackoff) {
  auto p = std::make_shared<probe>();
  auto sc = root_config();
  sc.backoff = {.min = 100ms, .max = 1s};
  sc.children.push_back(accumulator("acc", p));
  auto sup = start(sc);
  auto replies = request_all(lookup(sup, "acc").value(), {13, 1, 2, 3});
  run();
  EXPECT_TRUE(replies->lines.empty());
  advance(99ms);
  EXPECT_TRUE(replies->lines.empty());
  EXPECT_EQ(p->starts, 1);
  advance(1ms);
  // The failed message first, then the stash in arrival order.
  EXPECT_EQ(replies->lines, (std::vector<std::string>{"13=>13", "1=>14", "2=>16", "3=>19"}));
  EXPECT_EQ(p->seen, (std::vector<int>{13, 13, 1, 2, 3}));
}

TEST_F(StageTest, StashKeepsTheOrderAcrossRepeatedFailures) {
  auto p = std::make_shared<probe>();
  auto sc = root_config();
  sc.backoff = {.min = 100ms, .max = 1s};
  sc.children.push_back(accumulator("acc", p));
  auto sup = start(sc);
  auto replies = request_all(lookup(sup, "acc").value(), {13, 1, 13, 2});
  advance(100ms);
  // The second 13 fails on its first attempt during the replay: 2 waits
  // behind it for the next restart (200ms, the second consecutive one).
  EXPECT_EQ(replies->lines, (std::vector<std::string>{"13=>13", "1=>14"}));
  advance(199ms);
  EXPECT_EQ(replies->lines.size(), 2u);
  advance(1ms);
  EXPECT_EQ(replies->lines, (std::vector<std::string>{"13=>13", "1=>14", "13=>13", "2=>15"}));
  EXPECT_EQ(p->seen, (std::vector<int>{13, 13, 1, 13, 13, 2}));
}

TEST_F(StageTest, OneForAllSiblingStashesDuringTheSharedBackoff) {
  auto pa = std::make_shared<probe>();
  auto pb = std::make_shared<probe>();
  auto sc = root_config();
  sc.strategy = keel::restart_strategy::one_for_all;
  sc.backoff = {.min = 100ms, .max = 1s};
  sc.children.push_back(accumulator("a", pa));
  sc.children.push_back(accumulator("b", pb));
  auto sup = start(sc);
  auto b = lookup(sup, "b").value();
  EXPECT_EQ(ask<int>(b, 5).value(), 5);
  auto ra = request_all(lookup(sup, "a").value(), {13});
  auto rb = request_all(b, {1});
  EXPECT_TRUE(ra->lines.empty());
  EXPECT_TRUE(rb->lines.empty()); // b waits for its restart too
  advance(100ms);
  EXPECT_EQ(ra->lines, (std::vector<std::string>{"13=>13"}));
  EXPECT_EQ(rb->lines, (std::vector<std::string>{"1=>1"})); // b's state was dropped
  EXPECT_EQ(pb->starts, 2);
  auto delays = events_of(*rec, event_kind::restarted, "root/b");
  ASSERT_EQ(delays.size(), 1u);
  EXPECT_EQ(delays[0].delay, 100ms);
}

TEST_F(StageTest, FullStashWithRejectNewRefusesTheNewMessage) {
  auto p = std::make_shared<probe>();
  auto sc = root_config();
  sc.backoff = {.min = 100ms, .max = 1s};
  sc.children.push_back(accumulator("acc", p).with_stash(
      {.capacity = 2, .when_full = keel::stash_full_policy::reject_new}));
  auto sup = start(sc);
  auto replies = request_all(lookup(sup, "acc").value(), {13, 1, 2, 3});
  run();
  // Refused at once, while the stage still waits.
  EXPECT_EQ(replies->lines, (std::vector<std::string>{"3=>!resource_exhausted"}));
  advance(100ms);
  EXPECT_EQ(replies->lines,
            (std::vector<std::string>{"3=>!resource_exhausted", "13=>13", "1=>14", "2=>16"}));
  auto letters = dead->entries();
  ASSERT_EQ(letters.size(), 1u);
  EXPECT_EQ(letters[0].payload.get_as<int>(0), 3);
  EXPECT_EQ(letters[0].attempts, 0u);
  EXPECT_TRUE(letters[0].was_request);
  EXPECT_THAT(letters[0].error, FailedWith(keel::code::resource_exhausted));
  EXPECT_EQ(rec->count(event_kind::stash_overflow, "root/acc"), 1u);
}

TEST_F(StageTest, FullStashWithDropOldestDropsTheOldestStashedMessage) {
  auto p = std::make_shared<probe>();
  auto sc = root_config();
  sc.backoff = {.min = 100ms, .max = 1s};
  sc.children.push_back(accumulator("acc", p).with_stash(
      {.capacity = 2, .when_full = keel::stash_full_policy::drop_oldest}));
  auto sup = start(sc);
  auto replies = request_all(lookup(sup, "acc").value(), {13, 1, 2, 3});
  run();
  EXPECT_EQ(replies->lines, (std::vector<std::string>{"1=>!resource_exhausted"}));
  advance(100ms);
  EXPECT_EQ(replies->lines,
            (std::vector<std::string>{"1=>!resource_exhausted", "13=>13", "2=>15", "3=>18"}));
  auto letters = dead->entries();
  ASSERT_EQ(letters.size(), 1u);
  EXPECT_EQ(letters[0].payload.get_as<int>(0), 1);
  EXPECT_EQ(rec->count(event_kind::stash_overflow, "root/acc"), 1u);
}

TEST_F(StageTest, StashedRequestsGetErrorsWhenTheTreeShutsDownDuringABackoff) {
  auto p = std::make_shared<probe>();
  auto sc = root_config();
  sc.backoff = {.min = 100ms, .max = 1s};
  sc.children.push_back(accumulator("acc", p));
  auto sup = start(sc);
  auto replies = request_all(lookup(sup, "acc").value(), {13, 1, 2});
  run();
  EXPECT_TRUE(replies->lines.empty());
  caf::anon_send_exit(sup, caf::exit_reason::user_shutdown);
  run();
  // The failed message gets its failure, the stashed ones `unavailable`.
  EXPECT_EQ(replies->lines,
            (std::vector<std::string>{"13=>!panic", "1=>!unavailable", "2=>!unavailable"}));
  EXPECT_EQ(dead->size(), 3u);
  EXPECT_EQ(rec->count(event_kind::undeliverable, "root/acc"), 3u);
}

TEST_F(StageTest, StashedRequestsGetErrorsWhenTheDeciderStopsTheStage) {
  auto p = std::make_shared<probe>();
  auto sc = root_config();
  sc.decider = keel::decider::always(directive::stop);
  sc.children.push_back(accumulator("acc", p));
  auto sup = start(sc);
  auto replies = request_all(lookup(sup, "acc").value(), {99, 1, 2});
  run();
  // Whatever the interleaving, every requester hears back with an error.
  ASSERT_EQ(replies->lines.size(), 3u);
  EXPECT_EQ(replies->lines[0], "99=>!panic");
  EXPECT_EQ(replies->errors.size(), 3u);
  EXPECT_EQ(p->seen, (std::vector<int>{99}));
}

// -- backoff ----------------------------------------------------------------------

TEST_F(StageTest, BackoffGrowsByTheMultiplierUpToMax) {
  auto p = std::make_shared<probe>();
  auto sc = root_config();
  sc.backoff = {.min = 100ms, .max = 500ms, .multiplier = 3.0};
  sc.children.push_back(doubler("d", p).with_max_attempts(5));
  auto sup = start(sc);
  auto replies = request_all(lookup(sup, "d").value(), {-1});
  run();
  EXPECT_EQ(p->seen.size(), 1u);
  advance(99ms);
  EXPECT_EQ(p->seen.size(), 1u); // still waiting for its first restart
  advance(1ms);
  EXPECT_EQ(p->seen.size(), 2u);
  advance(299ms);
  EXPECT_EQ(p->seen.size(), 2u);
  advance(1ms);
  EXPECT_EQ(p->seen.size(), 3u);
  for (int i = 0; i < 3; ++i)
    advance(500ms);
  EXPECT_EQ(p->seen.size(), 5u);
  EXPECT_EQ(replies->lines, (std::vector<std::string>{"-1=>!panic"}));
  using ns = std::chrono::nanoseconds;
  EXPECT_EQ(delays_of("root/d"),
            (std::vector<ns>{100ms, 300ms, 500ms, 500ms, 500ms})); // 900ms capped at max
}

TEST_F(StageTest, BackoffExponentResetsAfterAStablePeriod) {
  auto p = std::make_shared<probe>();
  auto sc = root_config();
  sc.backoff = {.min = 100ms, .max = 10s, .reset_after = 5s};
  sc.children.push_back(accumulator("acc", p));
  auto sup = start(sc);
  auto acc = lookup(sup, "acc").value();
  auto r1 = request_all(acc, {13});
  advance(100ms);
  auto r2 = request_all(acc, {13});
  advance(199ms);
  EXPECT_TRUE(r2->lines.empty());
  advance(1ms);
  EXPECT_EQ(r2->lines, (std::vector<std::string>{"13=>13"})); // restarted from 0
  advance(5s);                                                // stable for reset_after
  auto r3 = request_all(acc, {13});
  advance(100ms);
  EXPECT_EQ(r3->lines, (std::vector<std::string>{"13=>13"}));
  using ns = std::chrono::nanoseconds;
  EXPECT_EQ(delays_of("root/acc"), (std::vector<ns>{100ms, 200ms, 100ms}));
  EXPECT_EQ(r1->lines, (std::vector<std::string>{"13=>13"}));
}

TEST_F(StageTest, JitterStaysWithinBoundsAndIsReproducibleWithAFixedSeed) {
  auto run_tree = [&](std::string name) {
    auto sc = root_config();
    sc.name = name;
    sc.seed = 42;
    sc.backoff = {.min = 100ms, .max = 1s, .jitter = 0.5, .multiplier = 2.0};
    sc.children.push_back(doubler("d", std::make_shared<probe>()).with_max_attempts(6));
    auto sup = start(sc);
    request_all(lookup(sup, "d").value(), {-1});
    for (int i = 0; i < 6; ++i)
      advance(2s);
    return delays_of(name + "/d");
  };
  auto first = run_tree("r1");
  auto second = run_tree("r2");
  ASSERT_EQ(first.size(), 6u);
  EXPECT_EQ(first, second);
  using dms = std::chrono::duration<double, std::milli>;
  for (size_t n = 0; n < first.size(); ++n) {
    double base = std::min(100.0 * (1 << n), 1000.0);
    double d = dms{first[n]}.count();
    EXPECT_GE(d, base) << "restart " << n;
    EXPECT_LE(d, std::min(base * 1.5, 1000.0)) << "restart " << n;
    if (base * 1.5 <= 1000.0) {
      EXPECT_GT(d, base) << "restart " << n << " got no jitter";
    }
  }
}

// -- start-up failures ------------------------------------------------------------

TEST_F(StageTest, FactoryThrowingOnFirstStartIsRestartedInPlace) {
  int calls = 0;
  auto sc = root_config();
  sc.children.push_back(keel::stage_spec("s", [&calls](keel::stage_context& ctx) {
    ++calls;
    if (ctx.restarts() == 0)
      throw std::runtime_error("no config yet");
    return caf::behavior{[](int x) { return x + 100; }};
  }));
  auto sup = start(sc);
  EXPECT_EQ(calls, 2);
  auto failed = events_of(*rec, event_kind::failed, "root/s");
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_THAT(failed[0].error,
              FailedWith(keel::code::panic, ::testing::HasSubstr("failed to start")));
  EXPECT_EQ(failed[0].decision, directive::restart);
  EXPECT_EQ(ask<int>(lookup(sup, "s").value(), 1).value(), 101);
}

TEST_F(StageTest, FactoryThrowingOnRestartIsRetriedAndTheMessageStillRuns) {
  auto p = std::make_shared<probe>();
  auto inner = accumulator("acc", p).stage;
  auto sc = root_config();
  sc.children.push_back(keel::stage_spec("acc", [inner](keel::stage_context& ctx) {
    if (ctx.restarts() == 1)
      throw std::runtime_error("flaky start");
    return inner(ctx);
  }));
  auto sup = start(sc);
  EXPECT_EQ(ask<int>(lookup(sup, "acc").value(), 13).value(), 13);
  EXPECT_EQ(p->seen, (std::vector<int>{13, 13}));
  auto failed = events_of(*rec, event_kind::failed, "root/acc");
  ASSERT_EQ(failed.size(), 2u);
  EXPECT_THAT(failed[1].error, FailedWith(keel::code::panic, ::testing::HasSubstr("flaky start")));
  EXPECT_EQ(rec->count(event_kind::restarted, "root/acc"), 2u);
}

TEST_F(StageTest, ResumeAfterAFailedStartRestartsInstead) {
  int calls = 0;
  auto sc = root_config();
  sc.decider = keel::decider::always(directive::resume);
  sc.children.push_back(keel::stage_spec("s", [&calls](keel::stage_context& ctx) {
    ++calls;
    if (ctx.restarts() == 0)
      throw std::runtime_error("no config yet");
    return caf::behavior{[](int x) { return x; }};
  }));
  auto sup = start(sc);
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(decisions_of(*rec, "root/s"), (std::vector<directive>{directive::restart}));
  EXPECT_EQ(ask<int>(lookup(sup, "s").value(), 7).value(), 7);
}

TEST_F(StageTest, FactoryReturningAnEmptyBehaviorEscalatesAtTheIntensityLimit) {
  int calls = 0;
  auto sc = root_config();
  sc.intensity = {3, 5s};
  sc.children.push_back(keel::stage_spec("s", [&calls](keel::stage_context&) {
    ++calls;
    return caf::behavior{};
  }));
  auto sup = spawn_supervisor(sys, sc);
  roots.push_back(sup);
  auto down = watch(sup);
  run();
  ASSERT_TRUE(down->has_value());
  auto why = keel::from_caf_error(**down);
  EXPECT_THAT(why,
              FailedWith(keel::code::failed_precondition, ::testing::HasSubstr("empty behavior")));
  EXPECT_THAT(why, ::testing::Not(FailedWith(keel::code::panic)));
  EXPECT_EQ(calls, 4); // first start + 3 restarts; the 4th restart escalates
}

TEST_F(StageTest, WorkerFactoryThrowingOnceIsRetried) {
  auto w = std::make_shared<worker_log>();
  auto make = recording_worker("w", w);
  int calls = 0;
  auto sc = root_config();
  sc.children.push_back(keel::worker_spec("w", [&calls, make](caf::actor_system& sys) {
    if (++calls == 1)
      throw std::runtime_error("port busy");
    return make(sys);
  }));
  auto sup = start(sc);
  EXPECT_EQ(calls, 2);
  auto failed = events_of(*rec, event_kind::failed, "root/w");
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_THAT(failed[0].error, FailedWith(keel::code::panic, ::testing::HasSubstr("port busy")));
  EXPECT_EQ(ask<int>(lookup(sup, "w").value(), 1).value(), 2);
}

TEST_F(StageTest, WorkerFactoryReturningNoActorIsAFailure) {
  auto sc = root_config();
  sc.children.push_back(keel::worker_spec("w", [](caf::actor_system&) {
                          return caf::actor{};
                        }).with_decider(keel::decider::always(directive::stop)));
  auto sup = start(sc);
  auto failed = events_of(*rec, event_kind::failed, "root/w");
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_THAT(failed[0].error, FailedWith(keel::code::failed_precondition));
  EXPECT_EQ(failed[0].decision, directive::stop);
  EXPECT_THAT(lookup(sup, "w"), FailedWith(keel::code::unavailable));
}

// -- typed stages -----------------------------------------------------------------

using calc = caf::typed_actor<caf::replies_to<int>::with<int>>;

TEST_F(StageTest, TypedStageAnswersThroughItsTypedHandleAcrossRestarts) {
  auto p = std::make_shared<probe>();
  auto sc = root_config();
  sc.children.push_back(
      keel::typed_stage_spec<calc>("calc", [p](keel::stage_context&) -> calc::behavior_type {
        ++p->starts;
        return {[p](int x) -> int {
          p->seen.push_back(x);
          if (x < 0)
            throw std::runtime_error("negative");
          return x + 1;
        }};
      }).with_max_attempts(1));
  auto sup = start(sc);
  auto handle = caf::actor_cast<calc>(lookup(sup, "calc").value());
  auto typed_ask = [&](int x) -> keel::expected<int> {
    auto h = self->request(handle, caf::infinite, x);
    run();
    if (self->mailbox().empty())
      return keel::unknown_error("no reply arrived");
    std::optional<int> value;
    keel::error err;
    h.receive([&](int y) { value = y; }, [&](caf::error& e) { err = keel::from_caf_error(e); });
    if (value)
      return *value;
    return err;
  };
  EXPECT_EQ(typed_ask(20).value(), 21);
  EXPECT_THAT(typed_ask(-1), FailedWith(keel::code::panic));
  EXPECT_EQ(p->starts, 2);
  EXPECT_EQ(caf::actor_cast<calc>(lookup(sup, "calc").value()), handle);
  EXPECT_EQ(typed_ask(41).value(), 42);
}

} // namespace
