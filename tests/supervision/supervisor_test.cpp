// Deterministic tests of supervisors on CAF's test coordinator: strategies,
// restart types, directives and decider rules.

#include "helpers.hpp"

#include <memory>

using namespace std::chrono_literals;
using namespace keel::testing;
using keel::directive;
using keel::event_kind;

namespace shop {
enum class errc : uint8_t { out_of_stock = 1, card_declined = 2 };
} // namespace shop

template <>
struct keel::error_code_enum<shop::errc> {
  static constexpr std::string_view category = "test.shop";
  static std::string_view name(shop::errc e) noexcept {
    return e == shop::errc::out_of_stock ? "out_of_stock" : "card_declined";
  }
  static keel::code canonical(shop::errc e) noexcept {
    return e == shop::errc::out_of_stock ? keel::code::unavailable
                                         : keel::code::failed_precondition;
  }
};

namespace {

class SupervisorTest : public supervision_test {
protected:
  keel::supervisor_config root_config() { return supervision_test::root_config({10, 1s}); }
};

TEST_F(SupervisorTest, StageAnswersThroughItsStableAddress) {
  auto p = std::make_shared<probe>();
  keel::supervisor_config sc;
  sc.name = "root";
  sc.children.push_back(doubler("d", p));
  auto sup = start(sc);
  auto d = lookup(sup, "d");
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(ask<int>(*d, 21).value(), 42);
  EXPECT_EQ(p->starts, 1);
}

TEST_F(SupervisorTest, ExceptionRestartsInPlaceAndRetriesTheMessage) {
  auto p = std::make_shared<probe>();
  auto sc = root_config();
  sc.children.push_back(doubler("d", p).with_max_attempts(2));
  auto sup = start(sc);
  auto d = lookup(sup, "d").value();
  auto r = ask<int>(d, -1);
  ASSERT_FALSE(r.has_value());
  EXPECT_TRUE(keel::is(r.error(), keel::code::panic)) << keel::to_string(r.error());
  EXPECT_EQ(p->seen, (std::vector<int>{-1, -1})); // tried twice
  EXPECT_EQ(p->starts, 3);                        // first start + 2 restarts
  EXPECT_EQ(lookup(sup, "d").value(), d);         // same address
  EXPECT_EQ(ask<int>(d, 5).value(), 10);
  EXPECT_EQ(rec->count(event_kind::quarantined), 1u);
}

// -- strategies ---------------------------------------------------------------

struct strategy_case {
  keel::restart_strategy strategy;
  std::vector<int> starts; // factory calls of a, b, c after b failed once
};

class StrategyTest : public SupervisorTest, public ::testing::WithParamInterface<strategy_case> {};

TEST_P(StrategyTest, FailureOfTheMiddleChildRestartsTheRightSiblingsInPlace) {
  auto pa = std::make_shared<probe>();
  auto pb = std::make_shared<probe>();
  auto pc = std::make_shared<probe>();
  auto sc = root_config();
  sc.strategy = GetParam().strategy;
  sc.children.push_back(doubler("a", pa));
  sc.children.push_back(doubler("b", pb).with_max_attempts(1));
  sc.children.push_back(doubler("c", pc));
  auto sup = start(sc);
  auto a = lookup(sup, "a").value();
  auto b = lookup(sup, "b").value();
  auto c = lookup(sup, "c").value();
  EXPECT_THAT(ask<int>(b, -1), FailedWith(keel::code::panic));
  EXPECT_EQ((std::vector<int>{pa->starts, pb->starts, pc->starts}), GetParam().starts);
  // Restarted or not, every stage keeps its address and answers.
  EXPECT_EQ(lookup(sup, "a").value(), a);
  EXPECT_EQ(lookup(sup, "b").value(), b);
  EXPECT_EQ(lookup(sup, "c").value(), c);
  EXPECT_EQ(ask<int>(a, 1).value(), 2);
  EXPECT_EQ(ask<int>(b, 2).value(), 4);
  EXPECT_EQ(ask<int>(c, 3).value(), 6);
  // Every restarted sibling is reported.
  EXPECT_EQ(rec->count(event_kind::restarted),
            static_cast<size_t>(pa->starts + pb->starts + pc->starts - 3));
}

INSTANTIATE_TEST_SUITE_P(
    Strategies, StrategyTest,
    ::testing::Values(strategy_case{keel::restart_strategy::one_for_one, {1, 2, 1}},
                      strategy_case{keel::restart_strategy::one_for_all, {2, 2, 2}},
                      strategy_case{keel::restart_strategy::rest_for_one, {1, 2, 2}}),
    [](const auto& info) { return std::string{keel::to_string(info.param.strategy)}; });

TEST_F(SupervisorTest, OneForAllRespawnsAWorkerSiblingAtANewAddress) {
  auto p = std::make_shared<probe>();
  auto w = std::make_shared<worker_log>();
  auto sc = root_config();
  sc.strategy = keel::restart_strategy::one_for_all;
  sc.children.push_back(doubler("s", p).with_max_attempts(1));
  sc.children.push_back(keel::worker_spec("w", recording_worker("w", w)));
  auto sup = start(sc);
  auto old_worker = lookup(sup, "w").value();
  EXPECT_THAT(ask<int>(lookup(sup, "s").value(), -1), FailedWith(keel::code::panic));
  EXPECT_EQ(w->starts, 2);
  EXPECT_EQ(*w->exits, (std::vector<std::string>{"w"})); // the old instance is gone
  auto new_worker = lookup(sup, "w").value();
  EXPECT_NE(new_worker, old_worker);
  EXPECT_EQ(ask<int>(new_worker, 1).value(), 2);
}

// -- restart types ------------------------------------------------------------

TEST_F(SupervisorTest, TemporaryStageIsStoppedInsteadOfRestarted) {
  auto p = std::make_shared<probe>();
  auto sc = root_config();
  sc.children.push_back(doubler("t", p).with_restart(keel::restart_type::temporary));
  auto sup = start(sc);
  auto t = lookup(sup, "t").value();
  // The failed message is not retried: its requester gets the failure.
  EXPECT_THAT(ask<int>(t, -1), FailedWith(keel::code::panic));
  EXPECT_EQ(p->starts, 1);
  EXPECT_EQ(p->seen, (std::vector<int>{-1}));
  EXPECT_EQ(decisions_of(*rec, "root/t"), (std::vector<directive>{directive::stop}));
  EXPECT_EQ(rec->count(event_kind::stopped, "root/t"), 1u);
  EXPECT_THAT(lookup(sup, "t"), FailedWith(keel::code::unavailable));
  auto snapshot = tree(sup).value();
  ASSERT_EQ(snapshot.children.size(), 1u);
  EXPECT_EQ(snapshot.children[0].state, keel::child_state::stopped);
}

TEST_F(SupervisorTest, TransientStageIsRestartedAfterAFailure) {
  auto p = std::make_shared<probe>();
  auto sc = root_config();
  sc.children.push_back(
      doubler("t", p).with_restart(keel::restart_type::transient).with_max_attempts(1));
  auto sup = start(sc);
  auto t = lookup(sup, "t").value();
  EXPECT_THAT(ask<int>(t, -1), FailedWith(keel::code::panic));
  EXPECT_EQ(p->starts, 2);
  EXPECT_EQ(ask<int>(t, 4).value(), 8);
}

struct worker_exit_case {
  std::string name;
  keel::restart_type restart;
  bool crash;     // abnormal exit (else normal)
  bool restarted; // expected
};

class WorkerExitTest : public SupervisorTest,
                       public ::testing::WithParamInterface<worker_exit_case> {};

TEST_P(WorkerExitTest, RestartTypeDecidesWhetherAnExitedWorkerComesBack) {
  const auto& param = GetParam();
  auto w = std::make_shared<worker_log>();
  auto sc = root_config();
  sc.children.push_back(
      keel::worker_spec("w", recording_worker("w", w)).with_restart(param.restart));
  auto sup = start(sc);
  auto first = lookup(sup, "w").value();
  if (param.crash)
    tell(first, t_crash_atom::value);
  else
    tell(first, t_quit_atom::value);
  EXPECT_EQ(*w->exits, (std::vector<std::string>{"w"}));
  if (param.restarted) {
    EXPECT_EQ(w->starts, 2);
    auto second = lookup(sup, "w").value();
    EXPECT_NE(second, first);
    EXPECT_EQ(ask<int>(second, 1).value(), 2);
    EXPECT_EQ(rec->count(event_kind::restarted, "root/w"), 1u);
  } else {
    EXPECT_EQ(w->starts, 1);
    EXPECT_THAT(lookup(sup, "w"), FailedWith(keel::code::unavailable));
    EXPECT_EQ(rec->count(event_kind::restarted, "root/w"), 0u);
    EXPECT_EQ(rec->count(event_kind::stopped, "root/w"), 1u);
  }
  if (param.restarted && !param.crash) {
    // A permanent worker that exits normally is restarted as a failure.
    auto failed = events_of(*rec, event_kind::failed, "root/w");
    ASSERT_EQ(failed.size(), 1u);
    EXPECT_THAT(failed[0].error, FailedWith(keel::code::aborted));
  }
  if (param.crash) {
    auto failed = events_of(*rec, event_kind::failed, "root/w");
    ASSERT_EQ(failed.size(), 1u);
    EXPECT_THAT(failed[0].error, FailedWith(keel::code::internal, ::testing::HasSubstr("crashed")));
  }
}

INSTANTIATE_TEST_SUITE_P(
    RestartTypes, WorkerExitTest,
    ::testing::Values(
        worker_exit_case{"PermanentNormal", keel::restart_type::permanent, false, true},
        worker_exit_case{"PermanentCrash", keel::restart_type::permanent, true, true},
        worker_exit_case{"TransientNormal", keel::restart_type::transient, false, false},
        worker_exit_case{"TransientCrash", keel::restart_type::transient, true, true},
        worker_exit_case{"TemporaryNormal", keel::restart_type::temporary, false, false},
        worker_exit_case{"TemporaryCrash", keel::restart_type::temporary, true, false}),
    [](const auto& info) { return info.param.name; });

// -- directives ---------------------------------------------------------------

TEST_F(SupervisorTest, RestartDirectiveDropsTheStateAndKeepsTheAddress) {
  auto p = std::make_shared<probe>();
  auto sc = root_config();
  sc.decider = keel::decider::always(directive::restart);
  sc.children.push_back(accumulator("acc", p));
  auto sup = start(sc);
  auto acc = lookup(sup, "acc").value();
  EXPECT_EQ(ask<int>(acc, 5).value(), 5);
  // 13 fails once; the new instance starts from 0 and handles the retry.
  EXPECT_EQ(ask<int>(acc, 13).value(), 13);
  EXPECT_EQ(p->starts, 2);
  EXPECT_EQ(p->seen, (std::vector<int>{5, 13, 13}));
  EXPECT_EQ(lookup(sup, "acc").value(), acc);
  EXPECT_EQ(ask<int>(acc, t_get_atom::value).value(), 13);
}

TEST_F(SupervisorTest, ResumeDirectiveKeepsTheStateAndRetriesTheMessage) {
  auto p = std::make_shared<probe>();
  auto sc = root_config();
  sc.decider = keel::decider::always(directive::resume);
  sc.children.push_back(accumulator("acc", p));
  auto sup = start(sc);
  auto acc = lookup(sup, "acc").value();
  EXPECT_EQ(ask<int>(acc, 5).value(), 5);
  EXPECT_EQ(ask<int>(acc, 13).value(), 18); // the total survived the failure
  EXPECT_EQ(p->starts, 1);
  EXPECT_EQ(p->seen, (std::vector<int>{5, 13, 13}));
  EXPECT_EQ(rec->count(event_kind::resumed, "root/acc"), 1u);
  EXPECT_EQ(rec->count(event_kind::restarted, "root/acc"), 0u);
}

TEST_F(SupervisorTest, StopDirectiveStopsTheStageAndLaterRequestsGetErrors) {
  auto p = std::make_shared<probe>();
  auto sc = root_config();
  sc.decider = keel::decider::always(directive::stop);
  sc.children.push_back(accumulator("acc", p));
  sc.children.push_back(doubler("other", std::make_shared<probe>()));
  auto sup = start(sc);
  auto acc = lookup(sup, "acc").value();
  EXPECT_EQ(ask<int>(acc, 5).value(), 5);
  EXPECT_THAT(ask<int>(acc, 99), FailedWith(keel::code::panic));
  EXPECT_EQ(p->seen, (std::vector<int>{5, 99})); // not retried
  // The failed message is a dead letter of the stopped stage.
  auto letters = dead->entries();
  ASSERT_EQ(letters.size(), 1u);
  EXPECT_EQ(letters[0].stage, "root/acc");
  EXPECT_EQ(letters[0].attempts, 1u);
  EXPECT_TRUE(letters[0].was_request);
  // Later requests are answered with an error, never left hanging.
  EXPECT_FALSE(ask<int>(acc, 1).has_value());
  EXPECT_THAT(lookup(sup, "acc"), FailedWith(keel::code::unavailable));
  EXPECT_EQ(rec->count(event_kind::stopped, "root/acc"), 1u);
  EXPECT_EQ(p->starts, 1);
  // The sibling is untouched.
  EXPECT_EQ(ask<int>(lookup(sup, "other").value(), 2).value(), 4);
}

TEST_F(SupervisorTest, EscalateDirectiveMakesTheRootExitWithTheFailure) {
  auto p = std::make_shared<probe>();
  auto w = std::make_shared<worker_log>();
  auto sc = root_config();
  sc.decider = keel::decider::always(directive::escalate);
  sc.children.push_back(keel::worker_spec("w", recording_worker("w", w)));
  sc.children.push_back(accumulator("acc", p));
  auto sup = start(sc);
  self->monitor(sup);
  tell(lookup(sup, "acc").value(), 99);
  run();
  ASSERT_FALSE(self->mailbox().empty());
  std::optional<keel::error> reason;
  self->receive([&](caf::down_msg& m) { reason = keel::from_caf_error(m.reason); });
  ASSERT_TRUE(reason.has_value());
  EXPECT_THAT(*reason, FailedWith(keel::code::panic, ::testing::HasSubstr("escalated")));
  EXPECT_THAT(*reason,
              HasDetail<keel::panic_info>(::testing::Field(&keel::panic_info::what, "unlucky 99")));
  EXPECT_EQ(*w->exits, (std::vector<std::string>{"w"})); // children were stopped
  EXPECT_EQ(rec->count(event_kind::escalated, "root"), 1u);
  EXPECT_EQ(p->starts, 1);
}

TEST_F(SupervisorTest, ResumeForACrashedWorkerRestartsIt) {
  auto w = std::make_shared<worker_log>();
  auto sc = root_config();
  sc.decider = keel::decider::always(directive::resume);
  sc.children.push_back(keel::worker_spec("w", recording_worker("w", w)));
  auto sup = start(sc);
  auto first = lookup(sup, "w").value();
  tell(first, t_crash_atom::value);
  // A dead worker has no state to resume: it is restarted.
  EXPECT_EQ(decisions_of(*rec, "root/w"), (std::vector<directive>{directive::restart}));
  EXPECT_EQ(w->starts, 2);
  EXPECT_NE(lookup(sup, "w").value(), first);
}

// -- decider rules --------------------------------------------------------------

TEST_F(SupervisorTest, DeciderRuleMatchesACanonicalCode) {
  auto p = std::make_shared<probe>();
  auto sc = root_config();
  sc.decider = keel::decider{}
                   .on(keel::code::invalid_argument, directive::resume)
                   .otherwise(directive::stop);
  sc.children.push_back(doubler("d", p).with_max_attempts(2));
  auto sup = start(sc);
  auto d = lookup(sup, "d").value();
  // 0 returns invalid_argument: resumed, retried, then quarantined.
  EXPECT_THAT(ask<int>(d, 0), FailedWith(keel::code::invalid_argument));
  EXPECT_EQ(p->starts, 1);
  EXPECT_EQ(ask<int>(d, 3).value(), 6);
  // An exception is not invalid_argument: the fallback stops the stage.
  EXPECT_THAT(ask<int>(d, -1), FailedWith(keel::code::panic));
  EXPECT_EQ(decisions_of(*rec, "root/d"),
            (std::vector<directive>{directive::resume, directive::resume, directive::stop}));
  EXPECT_THAT(lookup(sup, "d"), FailedWith(keel::code::unavailable));
}

TEST_F(SupervisorTest, DeciderRulesMatchApplicationCodesAndCategories) {
  auto stage = [](std::string id) {
    return keel::stage_spec(std::move(id), [](keel::stage_context&) {
      return caf::behavior{[](int x) -> caf::result<int> {
        if (x == 1)
          return keel::to_caf_error(keel::make_error(shop::errc::out_of_stock, "none left"));
        if (x == 2)
          return keel::to_caf_error(keel::make_error(shop::errc::card_declined, "declined"));
        if (x < 0)
          throw std::runtime_error("bug");
        return x;
      }};
    });
  };
  auto sc = root_config();
  sc.decider = keel::decider{}
                   .on(shop::errc::out_of_stock, directive::resume)
                   .on_category("test.shop", directive::stop)
                   .otherwise(directive::restart);
  sc.children.push_back(stage("a").with_max_attempts(1));
  sc.children.push_back(stage("b").with_max_attempts(1));
  sc.children.push_back(stage("c").with_max_attempts(1));
  auto sup = start(sc);
  auto fail_with = [&](const std::string& path, int x) {
    auto r = ask<int>(lookup(sup, path).value(), x);
    EXPECT_FALSE(r.has_value());
  };
  fail_with("a", 1);
  fail_with("b", 2);
  fail_with("c", -1);
  EXPECT_EQ(decisions_of(*rec, "root/a"), (std::vector<directive>{directive::resume}));
  EXPECT_EQ(decisions_of(*rec, "root/b"), (std::vector<directive>{directive::stop}));
  EXPECT_EQ(decisions_of(*rec, "root/c"), (std::vector<directive>{directive::restart}));
  auto failed_a = events_of(*rec, event_kind::failed, "root/a");
  ASSERT_EQ(failed_a.size(), 1u);
  EXPECT_TRUE(keel::is(failed_a[0].error, shop::errc::out_of_stock));
  auto snapshot = tree(sup).value();
  ASSERT_EQ(snapshot.children.size(), 3u);
  EXPECT_EQ(snapshot.children[0].state, keel::child_state::running);
  EXPECT_EQ(snapshot.children[1].state, keel::child_state::stopped);
  EXPECT_EQ(snapshot.children[2].state, keel::child_state::running);
  EXPECT_EQ(snapshot.children[2].restarts, 1u);
}

TEST_F(SupervisorTest, DeciderRuleMatchesADetailType) {
  auto px = std::make_shared<probe>();
  auto py = std::make_shared<probe>();
  auto sc = root_config();
  sc.decider =
      keel::decider{}.on_detail<keel::panic_info>(directive::stop).otherwise(directive::resume);
  sc.children.push_back(doubler("x", px).with_max_attempts(1));
  sc.children.push_back(doubler("y", py).with_max_attempts(1));
  auto sup = start(sc);
  EXPECT_THAT(ask<int>(lookup(sup, "x").value(), -1), FailedWith(keel::code::panic));
  EXPECT_THAT(ask<int>(lookup(sup, "y").value(), 0), FailedWith(keel::code::invalid_argument));
  EXPECT_EQ(decisions_of(*rec, "root/x"), (std::vector<directive>{directive::stop}));
  EXPECT_EQ(decisions_of(*rec, "root/y"), (std::vector<directive>{directive::resume}));
  EXPECT_THAT(lookup(sup, "x"), FailedWith(keel::code::unavailable));
  EXPECT_EQ(ask<int>(lookup(sup, "y").value(), 5).value(), 10);
  EXPECT_EQ(py->starts, 1);
}

TEST_F(SupervisorTest, ChildDeciderOverridesTheSupervisors) {
  auto pa = std::make_shared<probe>();
  auto pb = std::make_shared<probe>();
  auto sc = root_config();
  sc.decider = keel::decider::always(directive::stop);
  sc.children.push_back(doubler("a", pa).with_max_attempts(1).with_decider(
      keel::decider::always(directive::restart)));
  sc.children.push_back(doubler("b", pb).with_max_attempts(1));
  auto sup = start(sc);
  auto a = lookup(sup, "a").value();
  EXPECT_THAT(ask<int>(a, -1), FailedWith(keel::code::panic));
  EXPECT_THAT(ask<int>(lookup(sup, "b").value(), -1), FailedWith(keel::code::panic));
  EXPECT_EQ(decisions_of(*rec, "root/a"), (std::vector<directive>{directive::restart}));
  EXPECT_EQ(decisions_of(*rec, "root/b"), (std::vector<directive>{directive::stop}));
  EXPECT_EQ(pa->starts, 2);
  EXPECT_EQ(ask<int>(a, 1).value(), 2);
  EXPECT_THAT(lookup(sup, "b"), FailedWith(keel::code::unavailable));
}

TEST_F(SupervisorTest, NestedSupervisorInheritsItsParentsDecider) {
  auto p = std::make_shared<probe>();
  keel::supervisor_config inner;
  inner.children.push_back(accumulator("acc", p));
  auto sc = root_config();
  sc.decider = keel::decider::always(directive::resume);
  sc.children.push_back(keel::supervisor_spec("inner", inner));
  auto sup = start(sc);
  auto acc = lookup(sup, "inner/acc").value();
  EXPECT_EQ(ask<int>(acc, 5).value(), 5);
  EXPECT_EQ(ask<int>(acc, 13).value(), 18); // resumed: state kept
  EXPECT_EQ(p->starts, 1);
  auto failed = events_of(*rec, event_kind::failed, "root/inner/acc");
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_EQ(failed[0].supervisor, "root/inner");
  EXPECT_EQ(failed[0].decision, directive::resume);
}

TEST_F(SupervisorTest, NestedSupervisorsOwnDeciderWinsOverItsParents) {
  auto p = std::make_shared<probe>();
  keel::supervisor_config inner;
  inner.decider = keel::decider::always(directive::restart);
  inner.children.push_back(accumulator("acc", p));
  auto sc = root_config();
  sc.decider = keel::decider::always(directive::resume);
  sc.children.push_back(keel::supervisor_spec("inner", inner));
  auto sup = start(sc);
  auto acc = lookup(sup, "inner/acc").value();
  EXPECT_EQ(ask<int>(acc, 5).value(), 5);
  EXPECT_EQ(ask<int>(acc, 13).value(), 13); // restarted: state dropped
  EXPECT_EQ(p->starts, 2);
  EXPECT_EQ(decisions_of(*rec, "root/inner/acc"), (std::vector<directive>{directive::restart}));
}

} // namespace
