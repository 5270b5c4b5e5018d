// Randomised saga invariants (seeded; the seed is printed; KEEL_TEST_SEED
// replays it, KEEL_TEST_SCALE divides the work):
//  - every saga ends in exactly one terminal state, and its effects match it:
//    completed -> every step's effect exists; rolled_back -> none exists;
//    needs_intervention -> a reason, and only steps whose compensator gave up
//    may still have an effect;
//  - this holds under random faults (definite and transient failures,
//    exceptions, timeouts, failing compensators), random cancellation and a
//    coordinator stopped and restarted at random moments;
//  - no actor of a stopped coordinator stays alive.
// Also run under TSan (label concurrency).

#include "keel/saga/coordinator.hpp"

#include "keel/error.hpp"
#include "keel/store/memory_journal.hpp"

#include "../test_env.hpp"

#include <caf/all.hpp>

#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;
using keel::saga_state;
using keel::saga::coordinator;
using keel::saga::definition;
using keel::saga::step_context;

struct config : caf::actor_system_config {
  config() {
    keel::add_error_types(*this);
    set("scheduler.max-threads", 2);
  }
};

const std::vector<std::string> steps = {"a", "b", "c", "d"};

/// Effects by saga and step, applied idempotently by key.
struct world {
  std::mutex mtx;
  std::map<std::string, int> applied;                   // idempotency key -> count
  std::map<std::string, std::set<std::string>> live;    // saga -> steps with an effect
  std::map<std::string, std::set<std::string>> gave_up; // saga -> compensators that fail for good

  void apply(const step_context& ctx) {
    std::lock_guard<std::mutex> g{mtx};
    if (applied[ctx.idempotency_key()]++ > 0)
      return;
    if (ctx.compensating())
      live[ctx.saga_id()].erase(ctx.step());
    else
      live[ctx.saga_id()].insert(ctx.step());
  }
};

/// What a saga's steps do, drawn from the seed.
struct plan {
  enum class kind : uint8_t { ok, fail, transient, throws, hang, comp_fails };
  std::map<std::string, kind> by_step;
};

/// Waits (bounded: a hang guard, not a timing check) until only `baseline`
/// actors run.
bool no_actor_left(caf::actor_system& sys, size_t baseline) {
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (sys.registry().running() != baseline) {
    if (std::chrono::steady_clock::now() > deadline)
      return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

plan::kind draw(std::mt19937_64& rng) {
  auto r = std::uniform_int_distribution<int>{0, 99}(rng);
  if (r < 80)
    return plan::kind::ok;
  if (r < 85)
    return plan::kind::fail;
  if (r < 91)
    return plan::kind::transient;
  if (r < 94)
    return plan::kind::throws;
  if (r < 96)
    return plan::kind::hang;
  return plan::kind::comp_fails;
}

definition make_def(world& w, const std::map<std::string, plan>& plans, std::mutex& plans_mtx,
                    std::map<std::string, int>& transient_left) {
  definition d{"rnd"};
  keel::saga::step_options o;
  o.timeout = 20ms;
  o.retry.initial_backoff = 1ms;
  o.retry.max_backoff = 2ms;
  o.compensation_retry.max_attempts = 3;
  o.compensation_retry.initial_backoff = 1ms;
  o.compensation_retry.max_backoff = 2ms;
  auto kind_of = [&plans, &plans_mtx](const step_context& ctx) {
    std::lock_guard<std::mutex> g{plans_mtx};
    auto it = plans.find(ctx.saga_id());
    if (it == plans.end())
      return plan::kind::ok;
    auto k = it->second.by_step.find(ctx.step());
    return k == it->second.by_step.end() ? plan::kind::ok : k->second;
  };
  for (const auto& s : steps) {
    d.async_step(
        s,
        [&w, kind_of, &plans_mtx, &transient_left](std::shared_ptr<step_context> ctx) {
          switch (kind_of(*ctx)) {
            case plan::kind::fail:
              ctx->fail(keel::invalid_argument_error("planned failure"));
              return;
            case plan::kind::transient: {
              std::lock_guard<std::mutex> g{plans_mtx};
              if (transient_left[ctx->idempotency_key()]++ < 1) {
                ctx->fail(keel::unavailable_error("transient"));
                return;
              }
              break;
            }
            case plan::kind::throws:
              throw std::runtime_error("planned exception");
            case plan::kind::hang:
              // Half happens, then never answers: the timeout decides.
              w.apply(*ctx);
              return;
            default:
              break;
          }
          w.apply(*ctx);
          ctx->done();
        },
        [&w, kind_of](std::shared_ptr<step_context> ctx) {
          if (kind_of(*ctx) == plan::kind::comp_fails) {
            ctx->fail(keel::internal_error("compensator broken"));
            return;
          }
          w.apply(*ctx);
          ctx->done();
        },
        o);
  }
  d.rollback_deadline(10s);
  return d;
}

void run_one(uint64_t seed, size_t sagas) {
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng{seed};
  config cfg;
  caf::actor_system sys{cfg};
  auto baseline = sys.registry().running();
  auto journal = keel::store::make_memory_journal();
  world w;
  std::mutex plans_mtx;
  std::map<std::string, plan> plans;
  std::map<std::string, int> transient_left;
  std::vector<std::string> ids;
  for (size_t i = 0; i < sagas; ++i) {
    auto id = "r" + std::to_string(i);
    ids.push_back(id);
    plan p;
    for (const auto& s : steps)
      p.by_step[s] = draw(rng);
    plans[id] = p;
  }
  keel::saga::coordinator_config cc;
  cc.owner = "rnd";
  cc.seed = seed;
  // Phase 1: start everything, cancel some, stop the coordinator at a random
  // moment (as a crash would).
  {
    auto c = coordinator::start(sys, journal, {make_def(w, plans, plans_mtx, transient_left)}, cc);
    ASSERT_TRUE(c.has_value());
    for (const auto& id : ids)
      ASSERT_TRUE(c->begin("rnd", id).has_value());
    std::uniform_int_distribution<int> pick{0, static_cast<int>(sagas) - 1};
    for (size_t k = 0; k < sagas / 8; ++k)
      (void)c->cancel(ids[static_cast<size_t>(pick(rng))]); // may have ended already
    std::this_thread::sleep_for(
        std::chrono::milliseconds(std::uniform_int_distribution<int>{0, 30}(rng)));
    c->stop();
  }
  // An actor leaves the registry just after its down message: a bounded wait.
  EXPECT_TRUE(no_actor_left(sys, baseline))
      << sys.registry().running() - baseline << " actors of a stopped coordinator still run";
  // Phase 2: a new coordinator resumes whatever did not end.
  auto c = coordinator::start(sys, journal, {make_def(w, plans, plans_mtx, transient_left)}, cc);
  ASSERT_TRUE(c.has_value());
  std::map<saga_state, int> by_state;
  for (const auto& id : ids) {
    auto rec = journal->saga(id);
    ASSERT_TRUE(rec && *rec) << id;
    keel::expected<keel::saga::outcome> out = keel::saga::to_outcome(**rec);
    if (!keel::is_terminal((*rec)->state))
      out = c->wait(id, 60s);
    ASSERT_TRUE(out.has_value()) << id << ": " << out.error();
    ASSERT_TRUE(keel::is_terminal(out->state)) << id;
    ++by_state[out->state];
    std::lock_guard<std::mutex> g{w.mtx};
    const auto& live = w.live[id];
    switch (out->state) {
      case saga_state::completed:
        EXPECT_EQ(live.size(), steps.size()) << id;
        EXPECT_FALSE(out->failure) << id;
        break;
      case saga_state::rolled_back:
        EXPECT_TRUE(live.empty()) << id << " rolled back with effects left";
        EXPECT_TRUE(out->failure) << id;
        break;
      case saga_state::needs_intervention: {
        EXPECT_FALSE(out->reason.empty()) << id;
        // Only steps with a broken compensator may keep an effect.
        const auto& p = plans[id];
        for (const auto& s : live)
          EXPECT_EQ(p.by_step.at(s), plan::kind::comp_fails) << id << " step " << s;
        break;
      }
      default:
        ADD_FAILURE() << id << " not terminal";
    }
  }
  c->stop();
  EXPECT_TRUE(no_actor_left(sys, baseline))
      << sys.registry().running() - baseline << " actors still run";
  // Every saga was counted exactly once.
  int total = 0;
  for (auto& [s, n] : by_state)
    total += n;
  EXPECT_EQ(total, static_cast<int>(sagas));
}

TEST(SagaInvariants, EverySagaEndsOnceWithEffectsMatchingItsState) {
  auto seed = keel_test::test_seed();
  std::printf("SagaInvariants seed: %llu (KEEL_TEST_SEED to replay)\n",
              static_cast<unsigned long long>(seed));
  auto rounds = std::max<size_t>(2, 20 / keel_test::test_scale());
  auto sagas = std::max<size_t>(16, 200 / keel_test::test_scale());
  for (size_t r = 0; r < rounds; ++r) {
    run_one(seed + r, sagas);
    if (::testing::Test::HasFailure())
      break;
  }
}

} // namespace
