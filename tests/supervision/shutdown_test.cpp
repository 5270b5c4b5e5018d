// Deterministic tests of whole trees: shutdown order and timeouts, escalation,
// restart intensity, nested supervisors, lookup and tree rendering.

#include "helpers.hpp"

#include <map>
#include <memory>

using namespace std::chrono_literals;
using namespace keel::testing;
using keel::directive;
using keel::event_kind;

namespace {

class TreeTest : public supervision_test {
protected:
  /// A worker child noting its exit as `id` in `order`.
  keel::child_spec worker(const std::string& id, bool trap_exit = false) {
    auto log = std::make_shared<worker_log>();
    log->exits = order;
    logs[id] = log;
    return keel::worker_spec(id, recording_worker(id, log, trap_exit));
  }

  /// A doubler stage noting its (final) exit as `id` in `order`.
  keel::child_spec noting_stage(const std::string& id) {
    auto inner = doubler(id, std::make_shared<probe>()).stage;
    return keel::stage_spec(id, [inner, id, order = order](keel::stage_context& ctx) {
      if (ctx.restarts() == 0)
        ctx.self()->attach_functor([id, order](const caf::error&) { order->push_back(id); });
      return inner(ctx);
    });
  }

  std::shared_ptr<std::vector<std::string>> order = std::make_shared<std::vector<std::string>>();
  std::map<std::string, std::shared_ptr<worker_log>> logs;
};

// -- shutdown ---------------------------------------------------------------------

TEST_F(TreeTest, ShutdownStopsChildrenInReverseStartOrder) {
  auto sc = root_config();
  sc.children.push_back(worker("a"));
  sc.children.push_back(worker("b"));
  sc.children.push_back(worker("c"));
  auto sup = start(sc);
  auto down = watch(sup);
  EXPECT_TRUE(order->empty());
  caf::anon_send_exit(sup, caf::exit_reason::user_shutdown);
  run();
  EXPECT_EQ(*order, (std::vector<std::string>{"c", "b", "a"}));
  ASSERT_TRUE(down->has_value());
  EXPECT_EQ(**down, caf::exit_reason::user_shutdown);
  std::vector<std::string> stopped;
  for (auto& e : events_of(*rec, event_kind::stopped))
    stopped.push_back(e.child);
  EXPECT_EQ(stopped, (std::vector<std::string>{"root/c", "root/b", "root/a"}));
  EXPECT_EQ(logs["a"]->starts, 1); // nothing was restarted on the way down
}

TEST_F(TreeTest, ShutdownKillsAChildThatIgnoresTheExitAfterItsTimeout) {
  auto sc = root_config();
  sc.children.push_back(worker("a"));
  sc.children.push_back(worker("b", true).with_shutdown_timeout(2s));
  sc.children.push_back(worker("c"));
  auto sup = start(sc);
  auto down = watch(sup);
  caf::anon_send_exit(sup, caf::exit_reason::user_shutdown);
  run();
  // b ignores the exit; a waits for b.
  EXPECT_EQ(*order, (std::vector<std::string>{"c"}));
  advance(1999ms);
  EXPECT_EQ(*order, (std::vector<std::string>{"c"}));
  EXPECT_FALSE(down->has_value());
  advance(1ms);
  EXPECT_EQ(*order, (std::vector<std::string>{"c", "b", "a"}));
  ASSERT_TRUE(down->has_value());
  EXPECT_EQ(**down, caf::exit_reason::user_shutdown);
}

TEST_F(TreeTest, ShutdownStopsStagesAndNestedSupervisorsDepthFirst) {
  keel::supervisor_config inner;
  inner.children.push_back(worker("n1"));
  inner.children.push_back(worker("n2"));
  auto sc = root_config();
  sc.children.push_back(worker("w"));
  sc.children.push_back(noting_stage("s"));
  sc.children.push_back(keel::supervisor_spec("n", inner));
  auto sup = start(sc);
  lookup(sup, "n").value()->attach_functor([o = order](const caf::error&) { o->push_back("n"); });
  caf::anon_send_exit(sup, caf::exit_reason::user_shutdown);
  run();
  EXPECT_EQ(*order, (std::vector<std::string>{"n2", "n1", "n", "s", "w"}));
}

TEST_F(TreeTest, ShutdownDuringAWorkerBackoffDoesNotRespawnIt) {
  auto sc = root_config();
  sc.backoff = {.min = 1s, .max = 1s};
  sc.children.push_back(worker("w"));
  auto sup = start(sc);
  auto down = watch(sup);
  tell(lookup(sup, "w").value(), t_crash_atom::value);
  EXPECT_EQ(rec->count(event_kind::restarted, "root/w"), 1u);
  caf::anon_send_exit(sup, caf::exit_reason::user_shutdown);
  run();
  ASSERT_TRUE(down->has_value());
  advance(1s);
  EXPECT_EQ(logs["w"]->starts, 1);
}

// -- escalation and intensity -------------------------------------------------------

TEST_F(TreeTest, EscalationStopsChildrenInReverseOrderAndExitsWithTheError) {
  auto sc = root_config();
  sc.children.push_back(worker("a"));
  sc.children.push_back(worker("b"));
  sc.children.push_back(noting_stage("s").with_decider(keel::decider::always(directive::escalate)));
  auto sup = start(sc);
  auto down = watch(sup);
  tell(lookup(sup, "s").value(), -1);
  EXPECT_EQ(*order, (std::vector<std::string>{"s", "b", "a"}));
  ASSERT_TRUE(down->has_value());
  auto why = keel::from_caf_error(**down);
  EXPECT_THAT(why, FailedWith(keel::code::panic, ::testing::HasSubstr("negative: -1")));
  auto escalated = events_of(*rec, event_kind::escalated);
  ASSERT_EQ(escalated.size(), 1u);
  EXPECT_EQ(escalated[0].child, "root");
  EXPECT_THAT(escalated[0].error, FailedWith(keel::code::panic));
}

TEST_F(TreeTest, MoreRestartsThanTheIntensityWithinThePeriodEscalate) {
  auto p = std::make_shared<probe>();
  auto sc = root_config();
  sc.intensity = {2, 1s};
  sc.children.push_back(doubler("d", p).with_max_attempts(1));
  auto sup = start(sc);
  auto down = watch(sup);
  auto d = lookup(sup, "d").value();
  tell(d, -1);
  tell(d, -2);
  EXPECT_FALSE(down->has_value()); // two restarts are allowed
  EXPECT_EQ(p->starts, 3);
  tell(d, -3);
  ASSERT_TRUE(down->has_value());
  EXPECT_THAT(keel::from_caf_error(**down),
              FailedWith(keel::code::panic, ::testing::HasSubstr("restart intensity")));
  EXPECT_EQ(p->starts, 3); // the third failure was not restarted
  EXPECT_EQ(rec->count(event_kind::escalated, "root"), 1u);
}

TEST_F(TreeTest, RestartsSpreadBeyondThePeriodDoNotEscalate) {
  auto p = std::make_shared<probe>();
  auto sc = root_config();
  sc.intensity = {2, 1s};
  sc.children.push_back(doubler("d", p).with_max_attempts(1));
  auto sup = start(sc);
  auto down = watch(sup);
  auto d = lookup(sup, "d").value();
  for (int i = 0; i < 6; ++i) {
    tell(d, -1);
    advance(600ms); // never more than two restarts within 1s
  }
  EXPECT_FALSE(down->has_value());
  EXPECT_EQ(p->starts, 7);
  EXPECT_EQ(ask<int>(d, 2).value(), 4);
}

TEST_F(TreeTest, RestartsOfDifferentChildrenCountTogether) {
  auto sc = root_config();
  sc.intensity = {1, 1s};
  sc.children.push_back(doubler("a", std::make_shared<probe>()).with_max_attempts(1));
  sc.children.push_back(doubler("b", std::make_shared<probe>()).with_max_attempts(1));
  auto sup = start(sc);
  auto down = watch(sup);
  tell(lookup(sup, "a").value(), -1);
  EXPECT_FALSE(down->has_value());
  tell(lookup(sup, "b").value(), -1);
  ASSERT_TRUE(down->has_value());
  EXPECT_THAT(keel::from_caf_error(**down), FailedWith(keel::code::panic));
}

TEST_F(TreeTest, OneForAllFailureCountsOnceForTheIntensity) {
  auto sc = root_config();
  sc.strategy = keel::restart_strategy::one_for_all;
  sc.intensity = {1, 1s};
  auto pa = std::make_shared<probe>();
  sc.children.push_back(doubler("a", pa).with_max_attempts(1));
  sc.children.push_back(doubler("b", std::make_shared<probe>()));
  sc.children.push_back(doubler("c", std::make_shared<probe>()));
  auto sup = start(sc);
  auto down = watch(sup);
  tell(lookup(sup, "a").value(), -1);
  EXPECT_FALSE(down->has_value()); // three siblings restarted, one restart
  EXPECT_EQ(pa->starts, 2);
  tell(lookup(sup, "a").value(), -1);
  EXPECT_TRUE(down->has_value());
}

TEST_F(TreeTest, NestedSupervisorEscalationIsHandledByItsParent) {
  auto p = std::make_shared<probe>();
  keel::supervisor_config inner;
  inner.intensity = {0, 1s}; // the first restart escalates
  inner.children.push_back(doubler("d", p).with_max_attempts(1));
  auto sc = root_config();
  sc.children.push_back(keel::supervisor_spec("inner", inner));
  auto sup = start(sc);
  auto down = watch(sup);
  auto old_inner = lookup(sup, "inner").value();
  EXPECT_THAT(ask<int>(lookup(sup, "inner/d").value(), -1), FailedWith(keel::code::panic));
  EXPECT_FALSE(down->has_value());
  EXPECT_EQ(rec->count(event_kind::escalated, "root/inner"), 1u);
  auto failed = events_of(*rec, event_kind::failed, "root/inner");
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_EQ(failed[0].supervisor, "root");
  EXPECT_EQ(failed[0].decision, directive::restart);
  EXPECT_THAT(failed[0].error,
              FailedWith(keel::code::panic, ::testing::HasSubstr("restart intensity")));
  auto new_inner = lookup(sup, "inner").value();
  EXPECT_NE(new_inner, old_inner); // a supervisor is respawned
  EXPECT_EQ(p->starts, 2);
  EXPECT_EQ(ask<int>(lookup(sup, "inner/d").value(), 3).value(), 6);
  EXPECT_EQ(tree(sup).value().children.at(0).restarts, 1u);
}

TEST_F(TreeTest, RespawnedWorkerSurvivesTheKillTimerOfItsPredecessor) {
  auto sc = root_config();
  sc.strategy = keel::restart_strategy::one_for_all;
  sc.children.push_back(doubler("s", std::make_shared<probe>()).with_max_attempts(1));
  sc.children.push_back(worker("w").with_shutdown_timeout(1s));
  auto sup = start(sc);
  EXPECT_THAT(ask<int>(lookup(sup, "s").value(), -1), FailedWith(keel::code::panic));
  ASSERT_EQ(logs["w"]->starts, 2);
  auto second = lookup(sup, "w").value();
  // The first instance's kill timer must not hit the second one.
  advance(1s);
  EXPECT_EQ(*order, (std::vector<std::string>{"w"}));
  EXPECT_EQ(logs["w"]->starts, 2);
  EXPECT_EQ(lookup(sup, "w").value(), second);
  EXPECT_EQ(ask<int>(second, 1).value(), 2);
}

// -- nested trees, lookup, rendering --------------------------------------------------

TEST_F(TreeTest, NestedTreeOfDepthThreeIsReachableByPathAndRendered) {
  auto p = std::make_shared<probe>();
  keel::supervisor_config b;
  b.strategy = keel::restart_strategy::rest_for_one;
  b.children.push_back(doubler("c", p));
  keel::supervisor_config a;
  a.strategy = keel::restart_strategy::one_for_all;
  a.children.push_back(keel::supervisor_spec("b", b));
  auto sc = root_config();
  sc.children.push_back(keel::supervisor_spec("a", a));
  auto sup = start(sc);
  auto c = lookup(sup, "a/b/c");
  ASSERT_TRUE(c.has_value()) << keel::to_string(c.error());
  EXPECT_EQ(ask<int>(*c, 8).value(), 16);
  EXPECT_EQ(lookup(lookup(sup, "a/b").value(), "c").value(), *c);
  EXPECT_THAT(lookup(sup, "a/x"), FailedWith(keel::code::not_found, ::testing::HasSubstr("'x'")));
  EXPECT_THAT(lookup(sup, "a/b/c/d"), FailedWith(keel::code::not_found));
  EXPECT_THAT(lookup(sup, "zz"), FailedWith(keel::code::not_found));
  auto snapshot = tree(sup).value();
  ASSERT_EQ(snapshot.children.size(), 1u);
  ASSERT_EQ(snapshot.children[0].children.size(), 1u);
  ASSERT_EQ(snapshot.children[0].children[0].children.size(), 1u);
  const auto& leaf = snapshot.children[0].children[0].children[0];
  EXPECT_EQ(leaf.path, "root/a/b/c");
  EXPECT_EQ(leaf.kind, keel::child_spec::kind_t::stage);
  EXPECT_EQ(leaf.address, *c);
  EXPECT_EQ(keel::to_string(snapshot),
            "root [supervisor one_for_one, running, restarts 0]\n"
            "  a [supervisor one_for_all, running, permanent, restarts 0]\n"
            "    b [supervisor rest_for_one, running, permanent, restarts 0]\n"
            "      c [stage, running, permanent, restarts 0]\n");
}

TEST_F(TreeTest, TreeShowsStatesRestartsAndLastErrors) {
  auto sc = root_config();
  sc.children.push_back(doubler("d", std::make_shared<probe>()).with_max_attempts(1));
  sc.children.push_back(
      doubler("t", std::make_shared<probe>()).with_restart(keel::restart_type::temporary));
  sc.children.push_back(worker("w"));
  auto sup = start(sc);
  EXPECT_FALSE(ask<int>(lookup(sup, "d").value(), -1).has_value());
  EXPECT_FALSE(ask<int>(lookup(sup, "t").value(), -1).has_value());
  auto snapshot = tree(sup).value();
  ASSERT_EQ(snapshot.children.size(), 3u);
  EXPECT_EQ(snapshot.children[0].restarts, 1u);
  EXPECT_THAT(snapshot.children[0].last_error, FailedWith(keel::code::panic));
  EXPECT_EQ(snapshot.children[1].state, keel::child_state::stopped);
  EXPECT_FALSE(snapshot.children[1].address);
  auto text = keel::to_string(snapshot);
  EXPECT_THAT(text,
              ::testing::HasSubstr("  d [stage, running, permanent, restarts 1] last error: "));
  EXPECT_THAT(text,
              ::testing::HasSubstr("  t [stage, stopped, temporary, restarts 0] last error: "));
  EXPECT_THAT(text, ::testing::HasSubstr("  w [worker, running, permanent, restarts 0]\n"));
}

} // namespace
