// Randomised supervision tests on CAF's real scheduler (also run under TSan).
//
// Seeded and reproducible: the seed is printed; KEEL_TEST_SEED=<n> replays a
// run. Faults come from a hash of (seed, message, attempt), so the expected
// outcome of every message is known in advance.

#include "../test_env.hpp"

#include "keel/error.hpp"
#include "keel/supervision.hpp"

#include <caf/all.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <future>
#include <iostream>
#include <mutex>
#include <random>
#include <thread>

using namespace std::chrono_literals;

namespace {

using keel_test::test_scale;
using keel_test::test_seed;

uint64_t mix(uint64_t x) { // splitmix64 finaliser
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

struct config : caf::actor_system_config {
  config() {
    keel::add_error_types(*this);
    set("scheduler.max-threads", 2);
    set("logger.file-verbosity", caf::atom("quiet"));
  }
};

/// Waits (bounded) until `done()` holds; false when it never did.
template <class F>
bool eventually(F done, std::chrono::seconds limit = 120s) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline)
      return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

enum class fault { none, exception, error_return };

constexpr uint32_t max_attempts = 3;

/// Shared by the test and the stage instances.
struct world {
  explicit world(uint64_t seed, size_t senders, size_t per_sender)
      : seed(seed), per_sender(per_sender), successes(senders * per_sender), order(senders) {}

  fault fault_of(uint64_t id, uint32_t attempt) const {
    if (mix(seed ^ ~mix(id)) % 2000 == 0) // a poison message: fails every time
      return attempt % 2 == 0 ? fault::error_return : fault::exception;
    auto r = mix(seed ^ mix(id * 4 + attempt)) % 1000;
    if (r < 6)
      return fault::exception;
    if (r < 12)
      return fault::error_return;
    return fault::none;
  }

  bool startup_crash(uint32_t incarnation) const {
    return incarnation > 0 && mix(seed ^ ~uint64_t{incarnation}) % 100 < 8;
  }

  uint64_t seed;
  size_t per_sender;
  std::vector<std::atomic<uint8_t>> successes;
  std::atomic<uint64_t> outcomes{0};
  std::atomic<uint64_t> exceptions{0};
  std::atomic<uint64_t> error_returns{0};
  std::atomic<uint64_t> startup_crashes{0};
  // Per sender, message ids in the order their outcome happened. Written only
  // from the stage (one actor at a time), read after `outcomes` says done.
  std::vector<std::vector<uint64_t>> order;
  std::mutex quarantine_mtx;
  std::vector<std::pair<uint64_t, keel::error>> quarantined;
};

/// Records quarantined messages in the world (called on the stage's thread).
class recording_sink final : public keel::dead_letter_sink {
public:
  explicit recording_sink(world& w) : w_(w) {}

  void put(keel::dead_letter letter) override {
    auto sender = letter.payload.get_as<uint32_t>(0);
    auto seq = letter.payload.get_as<uint64_t>(1);
    auto id = sender * w_.per_sender + seq;
    {
      std::lock_guard<std::mutex> guard{w_.quarantine_mtx};
      w_.quarantined.emplace_back(id, letter.error);
    }
    w_.order[sender].push_back(id);
    w_.outcomes.fetch_add(1, std::memory_order_release);
  }

private:
  world& w_;
};

keel::child_spec faulty_stage(world& w) {
  return keel::stage_spec("work", [&w](keel::stage_context& ctx) {
    if (w.startup_crash(ctx.restarts())) {
      w.startup_crashes.fetch_add(1);
      throw std::runtime_error("start-up crash");
    }
    return caf::behavior{[&w, &ctx](uint32_t sender, uint64_t seq) -> keel::error {
      auto id = sender * w.per_sender + seq;
      switch (w.fault_of(id, ctx.attempt())) {
        case fault::exception:
          w.exceptions.fetch_add(1);
          throw std::runtime_error("injected exception on " + std::to_string(id));
        case fault::error_return:
          w.error_returns.fetch_add(1);
          return keel::unavailable_error("injected error on " + std::to_string(id));
        case fault::none:
          break;
      }
      w.successes[id].fetch_add(1);
      w.order[sender].push_back(id);
      w.outcomes.fetch_add(1, std::memory_order_release);
      return {};
    }};
  });
}

TEST(SupervisionConcurrency, HundredThousandMessagesUnderRandomFaults) {
  const auto seed = test_seed();
  std::cout << "seed: " << seed << " (KEEL_TEST_SEED=" << seed << " replays)\n";
  constexpr size_t senders = 4;
  const size_t per_sender = 25'000 / test_scale();
  const size_t total = senders * per_sender;
  std::cout << total << " messages\n";
  world w{seed, senders, per_sender};
  config cfg;
  caf::actor_system sys{cfg};
  const auto baseline = sys.registry().running();
  {
    auto events = std::make_shared<keel::event_recorder>();
    keel::supervisor_config sc;
    sc.name = "root";
    sc.intensity = {1'000'000, 1s};
    sc.seed = seed;
    sc.events = events;
    sc.dead_letters = std::make_shared<recording_sink>(w);
    // Error returns resume (state kept), exceptions and start-up crashes
    // restart.
    sc.decider.on(keel::code::unavailable, keel::directive::resume)
        .otherwise(keel::directive::restart);
    sc.children.push_back(faulty_stage(w).with_max_attempts(max_attempts).with_stash({total, {}}));
    auto tree = keel::supervision_tree::start(sys, sc);
    auto stage = tree.child("work");
    ASSERT_TRUE(stage.has_value()) << keel::to_string(stage.error());
    std::vector<std::thread> threads;
    for (uint32_t s = 0; s < senders; ++s)
      threads.emplace_back([&, s] {
        for (uint64_t i = 0; i < per_sender; ++i)
          caf::anon_send(*stage, s, i);
      });
    for (auto& t : threads)
      t.join();
    ASSERT_TRUE(eventually([&] { return w.outcomes.load(std::memory_order_acquire) >= total; }))
        << "only " << w.outcomes.load() << " of " << total << " messages ended (seed " << seed
        << ")";

    // Every message ended exactly once, as the fault plan says.
    size_t expected_quarantined = 0;
    uint64_t expected_exceptions = 0;
    uint64_t expected_error_returns = 0;
    for (uint64_t id = 0; id < total; ++id) {
      bool ok = false;
      for (uint32_t a = 1; a <= max_attempts && !ok; ++a) {
        switch (w.fault_of(id, a)) {
          case fault::none:
            ok = true;
            break;
          case fault::exception:
            ++expected_exceptions;
            break;
          case fault::error_return:
            ++expected_error_returns;
            break;
        }
      }
      if (!ok)
        ++expected_quarantined;
      ASSERT_EQ(w.successes[id].load(), ok ? 1 : 0) << "message " << id << " (seed " << seed << ")";
    }
    EXPECT_EQ(w.outcomes.load(), total);
    EXPECT_EQ(w.exceptions.load(), expected_exceptions);
    EXPECT_EQ(w.error_returns.load(), expected_error_returns);
    {
      std::lock_guard<std::mutex> guard{w.quarantine_mtx};
      ASSERT_EQ(w.quarantined.size(), expected_quarantined);
      for (const auto& [id, err] : w.quarantined) {
        EXPECT_EQ(w.successes[id].load(), 0) << id;
        EXPECT_TRUE(err) << id;
        auto info = keel::as<keel::stage_info>(err);
        ASSERT_TRUE(info.has_value()) << keel::to_string(err);
        EXPECT_EQ(info->stage, "root/work");
        EXPECT_EQ(info->attempt, max_attempts);
      }
    }
    // Per sender, outcomes happened in send order (the stash replays in order).
    for (size_t s = 0; s < senders; ++s) {
      ASSERT_EQ(w.order[s].size(), per_sender);
      for (size_t i = 0; i < per_sender; ++i)
        ASSERT_EQ(w.order[s][i], s * per_sender + i) << "sender " << s << " position " << i;
    }
    // Restarts match the injected faults: one per exception and start-up
    // crash; error returns resumed.
    auto snapshot = tree.tree();
    ASSERT_TRUE(snapshot.has_value());
    ASSERT_EQ(snapshot->children.size(), 1u);
    EXPECT_EQ(snapshot->children[0].restarts, w.exceptions.load() + w.startup_crashes.load());
    EXPECT_EQ(events->count(keel::event_kind::resumed), w.error_returns.load());
    EXPECT_EQ(events->count(keel::event_kind::quarantined), expected_quarantined);
    std::cout << "exceptions " << w.exceptions.load() << ", error returns "
              << w.error_returns.load() << ", start-up crashes " << w.startup_crashes.load()
              << ", quarantined " << expected_quarantined << "\n";
    EXPECT_FALSE(tree.shutdown());
  }
  EXPECT_TRUE(eventually([&] { return sys.registry().running() == baseline; }, 30s))
      << sys.registry().running() - baseline << " actors still alive after shutdown";
}

/// A requester that sends `n` requests to `dest` and counts replies of both
/// kinds.
struct reply_counts {
  std::atomic<size_t> values{0};
  std::atomic<size_t> errors{0};
};

caf::behavior requester(caf::event_based_actor* self, caf::actor dest, size_t n,
                        std::shared_ptr<reply_counts> counts) {
  auto left = std::make_shared<size_t>(n);
  auto done = [self, left] {
    if (--*left == 0)
      self->quit();
  };
  for (size_t i = 0; i < n; ++i)
    self->request(dest, caf::infinite, static_cast<int>(i))
        .then(
            [counts, done](int) {
              counts->values.fetch_add(1);
              done();
            },
            [counts, done](caf::error&) {
              counts->errors.fetch_add(1);
              done();
            });
  return {[](int) {}}; // stays until its requests are answered, then quits
}

TEST(SupervisionConcurrency, ShutdownAtRandomMomentsAnswersEveryRequestAndLeavesNoActor) {
  const auto seed = test_seed();
  std::cout << "seed: " << seed << " (KEEL_TEST_SEED=" << seed << " replays)\n";
  std::mt19937_64 rng{seed};
  config cfg;
  caf::actor_system sys{cfg};
  const auto baseline = sys.registry().running();
  size_t interrupted = 0;
  for (int round = 0; round < 20; ++round) {
    auto counts = std::make_shared<reply_counts>();
    constexpr size_t requesters = 3;
    const size_t per_requester = 2'000 / test_scale();
    {
      keel::supervisor_config sc;
      sc.name = "round" + std::to_string(round);
      sc.strategy = keel::restart_strategy::one_for_all;
      sc.intensity = {1'000'000, 1s};
      sc.seed = seed + static_cast<uint64_t>(round);
      sc.backoff = {.min = 20us, .max = 200us, .jitter = 0.5, .reset_after = 1ms};
      for (const char* id : {"a", "b", "c"})
        sc.children.push_back(keel::stage_spec(id, [](keel::stage_context&) {
          return caf::behavior{[](int x) -> int {
            if (x % 97 == 13)
              throw std::runtime_error("boom");
            return x;
          }};
        }));
      auto tree = keel::supervision_tree::start(sys, sc);
      auto b = tree.child("b");
      ASSERT_TRUE(b.has_value());
      for (size_t i = 0; i < requesters; ++i)
        sys.spawn(requester, *b, per_requester, counts);
      auto delay = std::chrono::microseconds(rng() % 20000);
      std::this_thread::sleep_for(delay);
      EXPECT_FALSE(tree.shutdown()) << "round " << round;
    }
    ASSERT_TRUE(eventually(
        [&] { return counts->values + counts->errors == requesters * per_requester; }, 60s))
        << "round " << round << " (seed " << seed << "): " << counts->values << " values + "
        << counts->errors << " errors of " << requesters * per_requester << " requests";
    interrupted += counts->errors;
    // Requesters quit once every reply arrived; nothing else may be left.
    ASSERT_TRUE(eventually([&] { return sys.registry().running() == baseline; }, 30s))
        << "round " << round << " (seed " << seed << "): " << sys.registry().running() - baseline
        << " actors still alive";
  }
  std::cout << interrupted << " requests answered with an error by a shut-down stage\n";
}

} // namespace

namespace {

TEST(SupervisionTree, RootEscalationReachesTheServiceAsAValueAndACallback) {
  config cfg;
  caf::actor_system sys{cfg};
  const auto baseline = sys.registry().running();
  {
    keel::supervisor_config sc;
    sc.name = "svc";
    sc.intensity = {2, 60s};
    sc.children.push_back(keel::stage_spec("bad", [](keel::stage_context&) {
                            return caf::behavior{[](int) -> int { throw std::logic_error("bug"); }};
                          }).with_max_attempts(1));
    auto tree = keel::supervision_tree::start(sys, sc);
    EXPECT_FALSE(tree.wait_for(0ms).has_value()); // still running
    EXPECT_FALSE(tree.done());
    std::promise<keel::error> from_callback;
    tree.on_exit([&](const keel::error& why) { from_callback.set_value(why); });
    auto bad = tree.child("bad");
    ASSERT_TRUE(bad.has_value());
    for (int i = 0; i < 3; ++i)
      caf::anon_send(*bad, i);
    auto why = tree.wait_for(60s);
    ASSERT_TRUE(why.has_value()) << "the root did not escalate";
    EXPECT_TRUE(keel::is(*why, keel::code::panic)) << keel::to_string(*why);
    EXPECT_NE(keel::to_string(*why).find("restart intensity"), std::string::npos)
        << keel::to_string(*why);
    EXPECT_EQ(from_callback.get_future().get(), *why);
    EXPECT_TRUE(tree.done());
    keel::error late;
    tree.on_exit([&](const keel::error& e) { late = e; }); // already exited: called at once
    EXPECT_EQ(late, *why);
    EXPECT_EQ(tree.shutdown(), *why);
    EXPECT_EQ(tree.wait(), *why);
  }
  EXPECT_TRUE(eventually([&] { return sys.registry().running() == baseline; }, 30s));
}

TEST(SupervisionTree, CleanShutdownReportsNoErrorAndDestructorShutsDown) {
  config cfg;
  caf::actor_system sys{cfg};
  const auto baseline = sys.registry().running();
  keel::error seen = keel::unknown_error("callback not called");
  {
    keel::supervisor_config sc;
    sc.name = "svc";
    sc.children.push_back(keel::stage_spec(
        "echo", [](keel::stage_context&) { return caf::behavior{[](int x) { return x; }}; }));
    auto tree = keel::supervision_tree::start(sys, sc);
    tree.on_exit([&](const keel::error& why) { seen = why; });
    auto echo = tree.child<caf::actor>("echo");
    ASSERT_TRUE(echo.has_value());
    auto missing = tree.child("nope");
    ASSERT_FALSE(missing.has_value());
    EXPECT_TRUE(keel::is(missing.error(), keel::code::not_found))
        << keel::to_string(missing.error());
    // The tree goes out of scope running: its destructor shuts it down.
  }
  EXPECT_FALSE(seen) << keel::to_string(seen);
  EXPECT_TRUE(eventually([&] { return sys.registry().running() == baseline; }, 30s));
}

} // namespace
