// Orchestrated sagas: every state transition, reverse compensation, retries,
// timeouts, cancel, deadlines, pivots, leases and in-process crash-resume.
//
// Runs use CAF's real scheduler; waits are bounded (hang guards only) and no
// test asserts on durations.

#include "keel/saga/coordinator.hpp"

#include "keel/error.hpp"
#include "keel/store/memory_journal.hpp"
#include "keel/store/sqlite_journal.hpp"

#include <caf/all.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;
using keel::saga_state;
using keel::saga::coordinator;
using keel::saga::coordinator_config;
using keel::saga::definition;
using keel::saga::step_context;
using keel::saga::step_options;

struct config : caf::actor_system_config {
  config() {
    keel::add_error_types(*this);
    set("scheduler.max-threads", 2);
  }
};

/// Waits (bounded) until `done()` holds.
template <class F>
bool eventually_true(F done, std::chrono::milliseconds limit = 10s) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline)
      return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

/// A fake side-effect store: effects keyed by idempotency key, plus the order
/// in which actions ran.
struct ledger {
  std::mutex mtx;
  std::map<std::string, int> effects; // idempotency key -> times applied (must stay 1)
  std::vector<std::string> calls;     // "fwd:<step>" / "comp:<step>" in call order
  std::set<std::string> live;         // steps whose effect exists now

  void apply(const step_context& ctx) {
    std::lock_guard<std::mutex> g{mtx};
    calls.push_back((ctx.compensating() ? "comp:" : "fwd:") + ctx.step());
    // Idempotent: a key applied once is not applied again.
    if (effects[ctx.idempotency_key()]++ == 0) {
      if (ctx.compensating())
        live.erase(ctx.step());
      else
        live.insert(ctx.step());
    }
  }

  std::vector<std::string> snapshot_calls() {
    std::lock_guard<std::mutex> g{mtx};
    return calls;
  }

  int applied(const std::string& key) {
    std::lock_guard<std::mutex> g{mtx};
    auto it = effects.find(key);
    return it == effects.end() ? 0 : it->second;
  }
};

/// Step behaviour by name: fail with a code N times, or always, or throw.
struct faults {
  std::map<std::string, std::pair<keel::code, int>> forward; // code, failures (-1: always)
  std::map<std::string, std::pair<keel::code, int>> compensate;
  std::set<std::string> throwing;
  std::mutex mtx;

  keel::error next(const std::string& step, bool comp) {
    std::lock_guard<std::mutex> g{mtx};
    auto& m = comp ? compensate : forward;
    auto it = m.find(step);
    if (it == m.end() || it->second.second == 0)
      return {};
    if (it->second.second > 0)
      --it->second.second;
    return keel::make_error(it->second.first,
                            "injected failure of " + step + (comp ? " (compensate)" : ""));
  }
};

/// A definition of `names` steps that record into `l` and fail per `f`.
definition make_def(const std::string& kind, const std::vector<std::string>& names, ledger& l,
                    faults& f, step_options opts = {}) {
  definition d{kind};
  opts.retry.initial_backoff = 1ms;
  opts.retry.max_backoff = 2ms;
  opts.compensation_retry.initial_backoff = 1ms;
  opts.compensation_retry.max_backoff = 2ms;
  for (const auto& n : names) {
    d.step(
        n,
        [&l, &f](step_context& ctx) -> keel::expected<void> {
          if (f.throwing.count(ctx.step()))
            throw std::runtime_error("boom in " + ctx.step());
          if (auto err = f.next(ctx.step(), false))
            return err;
          l.apply(ctx);
          ctx.data().set(ctx.step() + "_id", ctx.idempotency_key());
          return {};
        },
        [&l, &f](step_context& ctx) -> keel::expected<void> {
          if (auto err = f.next(ctx.step(), true))
            return err;
          l.apply(ctx);
          return {};
        },
        opts);
  }
  return d;
}

class SagaTest : public ::testing::Test {
protected:
  config cfg_;
  caf::actor_system sys_{cfg_};
  std::shared_ptr<keel::store::journal> journal_ = keel::store::make_memory_journal();
  ledger ledger_;
  faults faults_;

  coordinator start(std::vector<definition> defs, coordinator_config cfg = {}) {
    if (cfg.owner.empty())
      cfg.owner = "test-owner";
    auto c = coordinator::start(sys_, journal_, std::move(defs), std::move(cfg));
    EXPECT_TRUE(c.has_value()) << (c ? "" : keel::to_string(c.error()));
    return std::move(*c);
  }

  std::vector<keel::store::event_record> history_of(coordinator& c, const std::string& id) {
    auto h = c.history(id);
    EXPECT_TRUE(h.has_value());
    return h ? std::move(*h) : std::vector<keel::store::event_record>{};
  }

  std::vector<std::string> history_types(coordinator& c, const std::string& id) {
    std::vector<std::string> out;
    auto h = c.history(id);
    EXPECT_TRUE(h.has_value());
    if (h)
      for (const auto& e : *h)
        out.push_back(e.type + (e.name.empty() ? "" : ":" + e.name));
    return out;
  }
};

const std::vector<std::string> four = {"validate", "charge", "allocate", "ship"};

TEST_F(SagaTest, CompletesEveryStepInOrderAndPersistsTheData) {
  auto c = start({make_def("pay", four, ledger_, faults_)});
  auto out = c.run("pay", "s1", keel::saga::data{}.set("amount", 42));
  ASSERT_TRUE(out.has_value()) << keel::to_string(out.error());
  EXPECT_EQ(out->state, saga_state::completed);
  EXPECT_FALSE(out->failure);
  EXPECT_EQ(*out->data.get<int>("amount"), 42);
  EXPECT_EQ(*out->data.get<std::string>("charge_id"), "s1/charge");
  EXPECT_EQ(ledger_.snapshot_calls(),
            (std::vector<std::string>{"fwd:validate", "fwd:charge", "fwd:allocate", "fwd:ship"}));
  auto rec = journal_->saga("s1");
  ASSERT_TRUE(rec && *rec);
  EXPECT_EQ((*rec)->state, saga_state::completed);
  EXPECT_EQ((*rec)->mode, "orchestrated");
  EXPECT_EQ((*rec)->completed, four);
  EXPECT_EQ(
      history_types(c, "s1"),
      (std::vector<std::string>{"created:pay", "step_started:validate", "step_completed:validate",
                                "step_started:charge", "step_completed:charge",
                                "step_started:allocate", "step_completed:allocate",
                                "step_started:ship", "step_completed:ship", "completed"}));
  // The lease is given back at the end.
  auto lease = journal_->lease(keel::store::saga_lease("s1"));
  ASSERT_TRUE(lease.has_value());
  EXPECT_FALSE(lease->has_value());
}

TEST_F(SagaTest, AFailingStepCompensatesTheCompletedStepsInReverseOrder) {
  faults_.forward["allocate"] = {keel::code::invalid_argument, -1};
  auto c = start({make_def("pay", four, ledger_, faults_)});
  auto out = c.run("pay", "s1");
  ASSERT_TRUE(out.has_value());
  EXPECT_EQ(out->state, saga_state::rolled_back);
  EXPECT_TRUE(keel::is(out->failure, keel::code::invalid_argument)) << out->failure;
  EXPECT_NE(keel::to_string(out->failure).find("step allocate"), std::string::npos) << out->failure;
  EXPECT_EQ(ledger_.snapshot_calls(), (std::vector<std::string>{"fwd:validate", "fwd:charge",
                                                                "comp:charge", "comp:validate"}));
  EXPECT_TRUE(ledger_.live.empty());
  auto types = history_types(c, "s1");
  EXPECT_EQ(types.back(), "rolled_back");
  EXPECT_NE(std::find(types.begin(), types.end(), "compensation_begun"), types.end());
}

TEST_F(SagaTest, RetryableFailuresAreRetriedWithTheSameIdempotencyKey) {
  faults_.forward["charge"] = {keel::code::unavailable, 2};
  auto c = start({make_def("pay", four, ledger_, faults_)});
  auto out = c.run("pay", "s1");
  ASSERT_TRUE(out.has_value());
  EXPECT_EQ(out->state, saga_state::completed);
  EXPECT_EQ(ledger_.applied("s1/charge"), 1);
  auto h = c.history("s1");
  ASSERT_TRUE(h.has_value());
  int failures = 0;
  uint32_t last_attempt = 0;
  for (const auto& e : *h)
    if (e.name == "charge" && e.type == "step_failed")
      ++failures;
    else if (e.name == "charge" && e.type == "step_started")
      last_attempt = e.attempt;
  EXPECT_EQ(failures, 2);
  EXPECT_EQ(last_attempt, 3u);
}

TEST_F(SagaTest, ExhaustedRetriesRollBack) {
  faults_.forward["ship"] = {keel::code::unavailable, -1};
  step_options opts;
  opts.retry.max_attempts = 3;
  auto c = start({make_def("pay", four, ledger_, faults_, opts)});
  auto out = c.run("pay", "s1");
  ASSERT_TRUE(out.has_value());
  EXPECT_EQ(out->state, saga_state::rolled_back);
  EXPECT_TRUE(keel::is(out->failure, keel::code::unavailable));
  int started = 0;
  for (const auto& e : history_of(c, "s1"))
    if (e.name == "ship" && e.type == "step_started")
      ++started;
  EXPECT_EQ(started, 3);
}

TEST_F(SagaTest, AnExceptionInAStepIsAPanicAndRollsBack) {
  faults_.throwing.insert("charge");
  auto c = start({make_def("pay", four, ledger_, faults_)});
  step_options none;
  auto out = c.run("pay", "s1");
  ASSERT_TRUE(out.has_value());
  // panic is retryable by default: three attempts, then the rollback.
  EXPECT_EQ(out->state, saga_state::rolled_back);
  EXPECT_TRUE(keel::is(out->failure, keel::code::panic)) << out->failure;
  EXPECT_NE(keel::to_string(out->failure).find("boom in charge"), std::string::npos);
  EXPECT_EQ(ledger_.snapshot_calls(), (std::vector<std::string>{"fwd:validate", "comp:validate"}));
}

TEST_F(SagaTest, FailedCompensationsAreJoinedUnderTheForwardErrorAndNeedIntervention) {
  faults_.forward["ship"] = {keel::code::invalid_argument, -1};
  faults_.compensate["allocate"] = {keel::code::internal, -1};
  faults_.compensate["validate"] = {keel::code::unavailable, -1};
  auto c = start({make_def("pay", four, ledger_, faults_)});
  auto out = c.run("pay", "s1");
  ASSERT_TRUE(out.has_value());
  EXPECT_EQ(out->state, saga_state::needs_intervention);
  EXPECT_NE(out->reason.find("step allocate"), std::string::npos) << out->reason;
  EXPECT_NE(out->reason.find("step validate"), std::string::npos) << out->reason;
  // The forward error is the cause; the compensation errors are its children.
  EXPECT_EQ(out->failure.code(), keel::code::invalid_argument);
  ASSERT_TRUE(out->failure.cause());
  EXPECT_TRUE(keel::is(out->failure.cause(), keel::code::invalid_argument));
  ASSERT_EQ(out->failure.children().size(), 2u) << out->failure;
  EXPECT_TRUE(keel::is(out->failure.children()[0], keel::code::internal));
  EXPECT_TRUE(keel::is(out->failure.children()[1], keel::code::unavailable));
  // A failing compensator does not stop the others: charge was compensated.
  auto calls = ledger_.snapshot_calls();
  EXPECT_NE(std::find(calls.begin(), calls.end(), "comp:charge"), calls.end());
  // Each failing compensator was retried (5 attempts by default).
  int allocate_attempts = 0;
  for (const auto& e : history_of(c, "s1"))
    if (e.name == "allocate" && e.type == "compensation_started")
      ++allocate_attempts;
  EXPECT_EQ(allocate_attempts, 5);
  auto listed = c.list({saga_state::needs_intervention, {}, false, 0});
  ASSERT_TRUE(listed.has_value());
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ(listed->front().reason, out->reason);
}

TEST_F(SagaTest, AFailureAfterThePivotNeedsInterventionInsteadOfRollingBack) {
  definition d{"pay"};
  step_options pivot;
  pivot.compensatable = false;
  pivot.pivot = true;
  step_options once;
  once.retry.max_attempts = 1;
  d.step("charge",
         [&](step_context& ctx) -> keel::expected<void> {
           ledger_.apply(ctx);
           return {};
         })
      .step(
          "commit",
          [&](step_context& ctx) -> keel::expected<void> {
            ledger_.apply(ctx);
            return {};
          },
          {}, pivot)
      .step(
          "ship",
          [](step_context&) -> keel::expected<void> {
            return keel::unavailable_error("carrier down");
          },
          {}, once);
  auto c = start({std::move(d)});
  auto out = c.run("pay", "s1");
  ASSERT_TRUE(out.has_value());
  EXPECT_EQ(out->state, saga_state::needs_intervention);
  EXPECT_NE(out->reason.find("pivot step commit"), std::string::npos) << out->reason;
  EXPECT_EQ(ledger_.snapshot_calls(), (std::vector<std::string>{"fwd:charge", "fwd:commit"}));
}

TEST_F(SagaTest, ANonCompensatableLastStepThatFailsRollsBackTheOthers) {
  definition d = make_def("pay", {"charge", "ship"}, ledger_, faults_);
  step_options last;
  last.compensatable = false;
  last.retry.max_attempts = 1;
  d.step(
      "notify",
      [](step_context&) -> keel::expected<void> { return keel::unavailable_error("smtp down"); },
      {}, last);
  auto c = start({std::move(d)});
  auto out = c.run("pay", "s1");
  ASSERT_TRUE(out.has_value());
  EXPECT_EQ(out->state, saga_state::rolled_back);
  EXPECT_EQ(ledger_.snapshot_calls(),
            (std::vector<std::string>{"fwd:charge", "fwd:ship", "comp:ship", "comp:charge"}));
}

TEST_F(SagaTest, DefinitionsAreValidated) {
  auto noop = [](step_context&) -> keel::expected<void> { return {}; };
  step_options nc;
  nc.compensatable = false;
  struct bad_case {
    definition def;
    std::string needle;
  };
  std::vector<bad_case> cases;
  cases.push_back({definition{"k"}, "no steps"});
  cases.push_back({definition{"k"}.step("a", noop).step("a", noop), "appears twice"});
  cases.push_back({definition{"k"}.step("", noop), "has no name"});
  cases.push_back({definition{"k"}.step("mail", noop, {}, nc).step("b", noop), "make it last"});
  cases.push_back({definition{""}.step("a", noop), "kind is empty"});
  for (auto& bc : cases) {
    auto r = bc.def.validate();
    ASSERT_FALSE(r.has_value()) << bc.needle;
    EXPECT_EQ(r.error().code(), keel::code::invalid_argument);
    EXPECT_NE(keel::to_string(r.error()).find(bc.needle), std::string::npos) << r.error();
    auto c = coordinator::start(sys_, journal_, {bc.def});
    EXPECT_FALSE(c.has_value());
  }
  // Non-compensatable steps at the end, and pivots, are fine.
  step_options pv = nc;
  pv.pivot = true;
  EXPECT_TRUE(definition{"k"}.step("a", noop).step("m", noop, {}, nc).validate());
  EXPECT_TRUE(definition{"k"}.step("p", noop, {}, pv).step("b", noop).validate());
}

TEST_F(SagaTest, BeginRejectsUnknownKindsDuplicatesAndBadIds) {
  auto c = start({make_def("pay", four, ledger_, faults_)});
  auto unknown = c.begin("nope", "x");
  ASSERT_FALSE(unknown.has_value());
  EXPECT_EQ(unknown.error().code(), keel::code::not_found);
  ASSERT_TRUE(c.run("pay", "s1").has_value());
  auto dup = c.begin("pay", "s1");
  ASSERT_FALSE(dup.has_value());
  EXPECT_EQ(dup.error().code(), keel::code::already_exists);
  auto empty = c.begin("pay", "");
  ASSERT_FALSE(empty.has_value());
  EXPECT_EQ(empty.error().code(), keel::code::invalid_argument);
  auto missing = c.wait("never-started", 5s);
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code(), keel::code::not_found);
  // wait() on a finished saga answers from the journal.
  auto again = c.wait("s1", 5s);
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->state, saga_state::completed);
}

/// A step that parks until released, to hold a saga in flight.
struct gate {
  std::atomic<bool> open{false};
  std::atomic<int> entered{0};
};

keel::saga::async_action parked(gate& g, ledger& l) {
  return [&g, &l](std::shared_ptr<step_context> ctx) {
    ++g.entered;
    if (g.open) {
      l.apply(*ctx);
      ctx->done();
      return;
    }
    // Never completes: the saga stays in flight (until a timeout or cancel).
  };
}

TEST_F(SagaTest, AStepThatTimesOutIsCompensatedBecauseItsOutcomeIsUnknown) {
  gate g;
  step_options quick;
  quick.timeout = 30ms;
  quick.retry.max_attempts = 1;
  auto d = make_def("pay", {"charge"}, ledger_, faults_);
  d.async_step(
      "allocate", parked(g, ledger_),
      [&](std::shared_ptr<step_context> ctx) {
        ledger_.apply(*ctx);
        ctx->done();
      },
      quick);
  auto c = start({std::move(d)});
  auto out = c.run("pay", "s1");
  ASSERT_TRUE(out.has_value());
  EXPECT_EQ(out->state, saga_state::rolled_back);
  EXPECT_TRUE(keel::is(out->failure, keel::code::deadline_exceeded)) << out->failure;
  EXPECT_EQ(ledger_.snapshot_calls(),
            (std::vector<std::string>{"fwd:charge", "comp:allocate", "comp:charge"}));
}

TEST_F(SagaTest, CancelRollsBackAndDoesNotAbortCompensation) {
  gate g;
  auto d = make_def("pay", {"charge"}, ledger_, faults_);
  // A slow compensator: cancelling does not cut it short.
  d.async_step("allocate", parked(g, ledger_), [&](std::shared_ptr<step_context> ctx) {
    std::thread([ctx, &l = ledger_] {
      std::this_thread::sleep_for(50ms);
      l.apply(*ctx);
      ctx->done();
    }).detach();
  });
  d.rollback_deadline(10s);
  auto c = start({std::move(d)});
  ASSERT_TRUE(c.begin("pay", "s1").has_value());
  ASSERT_TRUE(eventually_true([&] { return g.entered.load() > 0; }));
  ASSERT_TRUE(c.cancel("s1").has_value());
  // A second cancel during the rollback changes nothing.
  (void)c.cancel("s1");
  auto out = c.wait("s1", 10s);
  ASSERT_TRUE(out.has_value());
  EXPECT_EQ(out->state, saga_state::rolled_back);
  EXPECT_TRUE(keel::is(out->failure, keel::code::cancelled)) << out->failure;
  auto calls = ledger_.snapshot_calls();
  EXPECT_EQ(calls, (std::vector<std::string>{"fwd:charge", "comp:allocate", "comp:charge"}));
}

TEST_F(SagaTest, ARollbackDeadlineThatPassesLeavesTheSagaNeedingIntervention) {
  gate never;
  step_options slow_comp;
  slow_comp.timeout = 10s; // the rollback deadline cuts the compensator short
  auto d = make_def("pay", {"charge"}, ledger_, faults_);
  d.async_step(
      "allocate", [&](std::shared_ptr<step_context> ctx) { ctx->done(); }, parked(never, ledger_),
      slow_comp);
  d.step("ship", [](step_context&) -> keel::expected<void> {
    return keel::invalid_argument_error("no address");
  });
  d.rollback_deadline(60ms);
  auto c = start({std::move(d)});
  auto out = c.run("pay", "s1");
  ASSERT_TRUE(out.has_value());
  EXPECT_EQ(out->state, saga_state::needs_intervention);
  EXPECT_TRUE(keel::is(out->failure, keel::code::invalid_argument)) << out->failure;
  // The compensator of allocate ran out of time; charge's compensator was
  // then not even started (the deadline had passed).
  ASSERT_EQ(out->failure.children().size(), 2u) << out->failure;
  EXPECT_TRUE(keel::is(out->failure.children()[0], keel::code::deadline_exceeded));
  EXPECT_TRUE(keel::is(out->failure.children()[1], keel::code::deadline_exceeded));
  EXPECT_NE(keel::to_string(out->failure).find("rollback deadline"), std::string::npos)
      << out->failure;
}

TEST_F(SagaTest, AForwardDeadlineRollsTheSagaBack) {
  gate g;
  auto d = make_def("pay", {"charge"}, ledger_, faults_);
  d.async_step("allocate", parked(g, ledger_), [&](std::shared_ptr<step_context> ctx) {
    ledger_.apply(*ctx);
    ctx->done();
  });
  d.forward_deadline(40ms);
  auto c = start({std::move(d)});
  auto out = c.run("pay", "s1");
  ASSERT_TRUE(out.has_value());
  EXPECT_EQ(out->state, saga_state::rolled_back);
  EXPECT_TRUE(keel::is(out->failure, keel::code::deadline_exceeded)) << out->failure;
  EXPECT_EQ(ledger_.snapshot_calls(),
            (std::vector<std::string>{"fwd:charge", "comp:allocate", "comp:charge"}));
}

TEST_F(SagaTest, ManySagasRunConcurrentlyAndEachEndsOnce) {
  faults_.forward["allocate"] = {keel::code::unavailable, 5}; // a few retries overall
  auto c = start({make_def("pay", four, ledger_, faults_)});
  constexpr int n = 64;
  for (int i = 0; i < n; ++i)
    ASSERT_TRUE(c.begin("pay", "s" + std::to_string(i)).has_value());
  for (int i = 0; i < n; ++i) {
    auto out = c.wait("s" + std::to_string(i), 30s);
    ASSERT_TRUE(out.has_value()) << out.error();
    EXPECT_EQ(out->state, saga_state::completed);
  }
  for (int i = 0; i < n; ++i)
    for (const auto& st : four)
      EXPECT_EQ(ledger_.applied("s" + std::to_string(i) + "/" + st), 1);
  auto done = c.list({saga_state::completed, std::string{"pay"}, false, 0});
  ASSERT_TRUE(done.has_value());
  EXPECT_EQ(done->size(), static_cast<size_t>(n));
  EXPECT_EQ(c.in_flight(), 0u);
}

// -- crash-resume and leases ------------------------------------------------------

TEST_F(SagaTest, AStoppedCoordinatorResumesForwardFromTheStepInFlight) {
  gate g;
  auto make = [&] {
    auto d = make_def("pay", {"validate", "charge"}, ledger_, faults_);
    d.async_step("allocate", parked(g, ledger_), [&](std::shared_ptr<step_context> ctx) {
      ledger_.apply(*ctx);
      ctx->done();
    });
    d.step("ship", [&](step_context& ctx) -> keel::expected<void> {
      ledger_.apply(ctx);
      EXPECT_FALSE(ctx.after_crash());
      return {};
    });
    return d;
  };
  {
    auto c = start({make()});
    ASSERT_TRUE(c.begin("pay", "s1", keel::saga::data{}.set("amount", 7)).has_value());
    ASSERT_TRUE(eventually_true([&] { return g.entered.load() > 0; }));
    c.stop(); // like a crash while allocate is in flight
  }
  auto rec = journal_->saga("s1");
  ASSERT_TRUE(rec && *rec);
  EXPECT_EQ((*rec)->state, saga_state::running);
  EXPECT_EQ((*rec)->step, 2);
  g.open = true;
  bool saw_after_crash = false;
  auto d = make();
  // Wrap allocate to see the after_crash flag of the re-run.
  auto inner = d.steps()[2].forward;
  definition d2{"pay"};
  for (const auto& st : d.steps())
    d2.async_step(st.name,
                  st.name == "allocate" ? keel::saga::async_action{[&, inner](auto ctx) {
                    saw_after_crash = ctx->after_crash();
                    inner(ctx);
                  }}
                                        : st.forward,
                  st.compensate, st.options);
  auto c = start({std::move(d2)});
  EXPECT_EQ(c.resumed(), (std::vector<std::string>{"s1"}));
  auto out = c.wait("s1", 10s);
  ASSERT_TRUE(out.has_value()) << out.error();
  EXPECT_EQ(out->state, saga_state::completed);
  EXPECT_TRUE(saw_after_crash);
  EXPECT_EQ(*out->data.get<int>("amount"), 7);
  // validate and charge were not run again; allocate ran once to completion.
  EXPECT_EQ(ledger_.snapshot_calls(),
            (std::vector<std::string>{"fwd:validate", "fwd:charge", "fwd:allocate", "fwd:ship"}));
  auto types = history_types(c, "s1");
  EXPECT_NE(std::find(types.begin(), types.end(), "resumed"), types.end());
}

TEST_F(SagaTest, AStoppedCoordinatorResumesARollbackWhereItWas) {
  gate g;
  auto make = [&](bool park_comp) {
    auto d = make_def("pay", {"validate"}, ledger_, faults_);
    d.async_step(
        "charge",
        [&](std::shared_ptr<step_context> ctx) {
          ledger_.apply(*ctx);
          ctx->done();
        },
        park_comp ? parked(g, ledger_) : keel::saga::async_action{[&](auto ctx) {
          ledger_.apply(*ctx);
          ctx->done();
        }});
    d.step("allocate", [](step_context&) -> keel::expected<void> {
      return keel::invalid_argument_error("out of stock");
    });
    return d;
  };
  {
    auto c = start({make(true)});
    ASSERT_TRUE(c.begin("pay", "s1").has_value());
    ASSERT_TRUE(eventually_true([&] { return g.entered.load() > 0; }));
    c.stop();
  }
  auto rec = journal_->saga("s1");
  ASSERT_TRUE(rec && *rec);
  EXPECT_EQ((*rec)->state, saga_state::compensating);
  auto c = start({make(false)});
  auto out = c.wait("s1", 10s);
  ASSERT_TRUE(out.has_value()) << out.error();
  EXPECT_EQ(out->state, saga_state::rolled_back);
  EXPECT_TRUE(keel::is(out->failure, keel::code::invalid_argument)) << out->failure;
  EXPECT_EQ(ledger_.snapshot_calls(), (std::vector<std::string>{"fwd:validate", "fwd:charge",
                                                                "comp:charge", "comp:validate"}));
}

TEST_F(SagaTest, ReRunningEveryStepAndCompensatorTwiceHasTheEffectOfOnce) {
  // Each action runs twice with the same idempotency key (as after a crash
  // between the action and the journal write): the ledger applies it once.
  definition d{"pay"};
  for (const auto& n : four)
    d.step(
        n,
        [&](step_context& ctx) -> keel::expected<void> {
          ledger_.apply(ctx);
          ledger_.apply(ctx);
          return {};
        },
        [&](step_context& ctx) -> keel::expected<void> {
          ledger_.apply(ctx);
          ledger_.apply(ctx);
          return {};
        });
  d.step("fail",
         [](step_context&) -> keel::expected<void> { return keel::invalid_argument_error("no"); });
  auto c = start({std::move(d)});
  auto out = c.run("pay", "s1");
  ASSERT_TRUE(out.has_value());
  EXPECT_EQ(out->state, saga_state::rolled_back);
  for (const auto& n : four) {
    EXPECT_EQ(ledger_.applied("s1/" + n), 2) << n; // called twice ...
    EXPECT_EQ(ledger_.applied("s1/" + n + "/compensate"), 2) << n;
  }
  EXPECT_TRUE(ledger_.live.empty()); // ... with the effect of once
}

TEST_F(SagaTest, ALeaseHeldByAnotherOwnerKeepsTheSagaFromRunningUntilReleased) {
  // Another process holds s1's lease and the journal says s1 is running.
  keel::store::saga_record rec;
  rec.id = "s1";
  rec.kind = "pay";
  rec.mode = "orchestrated";
  rec.state = saga_state::running;
  rec.step = 1;
  rec.completed = {"validate"};
  keel::store::write_batch b;
  b.put_saga(rec).acquire_lease(
      keel::store::saga_lease("s1"), "other-process",
      keel::store::unix_ms{std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count()},
      60'000);
  ASSERT_TRUE(journal_->commit(b).has_value());
  coordinator_config cfg;
  cfg.lease_retry = 5ms;
  auto c = start({make_def("pay", four, ledger_, faults_)}, cfg);
  EXPECT_EQ(c.resumed(), (std::vector<std::string>{"s1"}));
  // It keeps trying; nothing runs while the other owner holds the lease.
  std::this_thread::sleep_for(50ms);
  EXPECT_TRUE(ledger_.snapshot_calls().empty());
  auto still = journal_->saga("s1");
  ASSERT_TRUE(still && *still);
  EXPECT_EQ((*still)->state, saga_state::running);
  // The other owner gives it up: this coordinator takes it and finishes it.
  keel::store::write_batch rel;
  rel.release_lease(keel::store::saga_lease("s1"), "other-process");
  ASSERT_TRUE(journal_->commit(rel).has_value());
  auto out = c.wait("s1", 10s);
  ASSERT_TRUE(out.has_value()) << out.error();
  EXPECT_EQ(out->state, saga_state::completed);
  EXPECT_EQ(ledger_.snapshot_calls(),
            (std::vector<std::string>{"fwd:charge", "fwd:allocate", "fwd:ship"}));
}

TEST_F(SagaTest, TwoCoordinatorsOnOneSqliteJournalNeverRunASagaTwice) {
  auto dir =
      std::filesystem::temp_directory_path() / ("keel-saga-test-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  auto path = (dir / "two.journal").string();
  std::filesystem::remove(path);
  {
    keel::store::sqlite_options so;
    so.level = keel::store::durability::off;
    auto j1 = keel::store::open_sqlite_journal(path, so);
    auto j2 = keel::store::open_sqlite_journal(path, so);
    ASSERT_TRUE(j1.has_value()) << j1.error();
    ASSERT_TRUE(j2.has_value()) << j2.error();
    gate g;
    auto d = make_def("pay", {"charge"}, ledger_, faults_);
    d.async_step("allocate", parked(g, ledger_),
                 [&](std::shared_ptr<step_context> ctx) { ctx->done(); });
    coordinator_config a;
    a.owner = "A";
    auto ca = coordinator::start(sys_, *j1, {d}, a);
    ASSERT_TRUE(ca.has_value());
    ASSERT_TRUE(ca->begin("pay", "s1").has_value());
    ASSERT_TRUE(eventually_true([&] { return g.entered.load() > 0; }));
    // B starts on the same file while A runs s1: it sees s1 unfinished but
    // cannot take its lease.
    coordinator_config bcfg;
    bcfg.owner = "B";
    bcfg.lease_retry = 5ms;
    auto cb = coordinator::start(sys_, *j2, {d}, bcfg);
    ASSERT_TRUE(cb.has_value());
    EXPECT_EQ(cb->resumed(), (std::vector<std::string>{"s1"}));
    std::this_thread::sleep_for(50ms);
    EXPECT_EQ(g.entered.load(), 1); // B did not run allocate
    // A stops (its lease is released); B takes over and finishes s1.
    g.open = true;
    ca->stop();
    auto out = cb->wait("s1", 10s);
    ASSERT_TRUE(out.has_value()) << out.error();
    EXPECT_EQ(out->state, saga_state::completed);
    EXPECT_EQ(ledger_.applied("s1/charge"), 1);
    auto h = cb->history("s1");
    ASSERT_TRUE(h.has_value());
    bool resumed_by_b = false;
    for (const auto& e : *h)
      if (e.type == "resumed" && e.detail.find("\"B\"") != std::string::npos)
        resumed_by_b = true;
    EXPECT_TRUE(resumed_by_b);
  }
  std::filesystem::remove_all(dir);
}

TEST_F(SagaTest, ActorsCanBeginAndWaitThroughTheCoordinatorActor) {
  auto c = start({make_def("pay", four, ledger_, faults_)});
  caf::scoped_actor self{sys_};
  keel::error begun = keel::internal_error("no reply");
  self->request(c.actor(), 5s, keel::saga::begin_atom::value, std::string{"pay"}, std::string{"a1"},
                std::string{R"({"amount":3})"})
      .receive([&](keel::error& e) { begun = std::move(e); },
               [&](caf::error& e) { begun = keel::from_caf_error(e); });
  EXPECT_FALSE(begun) << begun;
  auto out = c.wait("a1", 10s);
  ASSERT_TRUE(out.has_value());
  EXPECT_EQ(out->state, saga_state::completed);
  EXPECT_EQ(*out->data.get<int>("amount"), 3);
}

TEST_F(SagaTest, QueriesWorkOnAJournalWithoutACoordinator) {
  faults_.forward["allocate"] = {keel::code::invalid_argument, -1};
  {
    auto c = start({make_def("pay", four, ledger_, faults_)});
    ASSERT_TRUE(c.run("pay", "ok", {}).has_value());
  } // the coordinator is gone; the journal answers alone
  keel::saga::saga_queries q{journal_};
  auto st = q.status("ok");
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(st->state, saga_state::rolled_back);
  EXPECT_TRUE(keel::is(st->failure, keel::code::invalid_argument));
  auto missing = q.status("nope");
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code(), keel::code::not_found);
  auto rolled = q.list({saga_state::rolled_back, {}, false, 0});
  ASSERT_TRUE(rolled.has_value());
  ASSERT_EQ(rolled->size(), 1u);
  EXPECT_EQ(rolled->front().id, "ok");
  auto h = q.history("ok");
  ASSERT_TRUE(h.has_value());
  ASSERT_FALSE(h->empty());
  EXPECT_EQ(h->front().type, "created");
  EXPECT_EQ(h->back().type, "rolled_back");
  for (size_t i = 0; i < h->size(); ++i)
    EXPECT_EQ((*h)[i].seq, i + 1);
}

} // namespace
