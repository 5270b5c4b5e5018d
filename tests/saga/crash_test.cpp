// Crash-resume under SIGKILL: a child process (payment_child.cpp) runs payment
// sagas with random latency and faults and is killed at random points, at
// least 50 times (seeded: KEEL_TEST_SEED replays a run). After every kill the
// sagas that ended must have left the ledger consistent; after a final run
// without a kill every saga must have ended (completed, rolled_back, or
// needs_intervention with a reason) and the whole ledger must be consistent:
// every charge part of a completed order or refunded exactly once, no leaked
// reservation, no live shipment of a rolled-back order.

#include "../test_env.hpp"

#include "payment/ledger.hpp"

#include "keel/store/sqlite_journal.hpp"
#include "keel/testing/matchers.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

using keel::testing::IsOk;

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

/// A running child with its stdout on a pipe.
struct child {
  pid_t pid = -1;
  int out = -1;
  std::string output;

  /// Reads what is available, waiting at most `wait`; false at EOF.
  bool read_some(std::chrono::milliseconds wait) {
    pollfd p{out, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(wait.count())) <= 0)
      return true;
    char buf[512];
    auto n = ::read(out, buf, sizeof buf);
    if (n <= 0)
      return false;
    output.append(buf, static_cast<size_t>(n));
    return true;
  }

  /// Waits until the output holds `text` (false on EOF or after `limit`).
  bool wait_for(const std::string& text, std::chrono::milliseconds limit) {
    auto deadline = clock_type::now() + limit;
    while (output.find(text) == std::string::npos) {
      if (clock_type::now() > deadline || !read_some(20ms))
        return false;
    }
    return true;
  }

  /// Reaps the child; returns its wait status.
  int reap() {
    int status = 0;
    ::waitpid(pid, &status, 0);
    ::close(out);
    return status;
  }
};

child spawn_child(const fs::path& dir, int first, int count, uint64_t seed) {
  int fds[2];
  if (::pipe(fds) != 0)
    throw std::runtime_error(std::string{"pipe: "} + std::strerror(errno));
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&fa, fds[0]);
  posix_spawn_file_actions_addclose(&fa, fds[1]);
  std::vector<std::string> args = {KEEL_PAYMENT_CHILD, dir.string(), std::to_string(first),
                                   std::to_string(count), std::to_string(seed)};
  std::vector<char*> argv;
  for (auto& a : args)
    argv.push_back(a.data());
  argv.push_back(nullptr);
  child c;
  int rc = ::posix_spawn(&c.pid, KEEL_PAYMENT_CHILD, &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(fds[1]);
  if (rc != 0) {
    ::close(fds[0]);
    throw std::runtime_error(std::string{"posix_spawn: "} + std::strerror(rc));
  }
  c.out = fds[0];
  return c;
}

struct journal_view {
  std::vector<keel::store::saga_record> sagas;
  size_t unfinished = 0;
};

/// Reads the journal (no child runs now).
journal_view read_journal(const fs::path& dir) {
  keel::store::sqlite_options opts;
  opts.create = false;
  auto j = keel::store::open_sqlite_journal((dir / "journal.db").string(), opts);
  journal_view v;
  if (!j) {
    // Killed before the journal was created.
    EXPECT_TRUE(keel::is_not_found(j.error())) << j.error();
    return v;
  }
  auto s = (*j)->sagas();
  EXPECT_THAT(s, IsOk());
  if (s)
    v.sagas = std::move(*s);
  for (auto& r : v.sagas)
    if (!keel::is_terminal(r.state))
      ++v.unfinished;
  return v;
}

keel::expected<payment::consistency_report> check(const fs::path& dir, const journal_view& v,
                                                  bool final) {
  auto l = payment::ledger::open((dir / "ledger.db").string());
  if (!l)
    return l.error();
  return payment::check_consistency(**l, v.sagas, {.require_terminal = final});
}

TEST(SagaCrash, SigkillAtRandomPointsLeavesEverySagaEndedAndTheLedgerConsistent) {
  auto seed = keel_test::test_seed();
  std::cout << "KEEL_TEST_SEED=" << seed << '\n';
  const size_t kills_wanted = std::max<size_t>(50 / keel_test::test_scale(), 5);
  constexpr int per_round = 6;
  auto dir = fs::temp_directory_path() / ("keel-saga-crash-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::mt19937_64 rng{seed};
  auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>{lo, hi}(rng); };

  size_t kills = 0, rounds = 0, interrupted = 0, early_kills = 0;
  auto started = clock_type::now();
  while (kills < kills_wanted && rounds < 3 * kills_wanted) {
    auto c = spawn_child(dir, static_cast<int>(rounds) * per_round, per_round, seed);
    ++rounds;
    if (uniform(0, 9) == 0) {
      // Some kills land while the child opens the journal or resumes.
      std::this_thread::sleep_for(std::chrono::milliseconds(uniform(0, 30)));
      ++early_kills;
    } else {
      ASSERT_TRUE(c.wait_for("ready", 30s)) << "the child did not start: " << c.output;
      std::this_thread::sleep_for(std::chrono::milliseconds(uniform(5, 80)));
    }
    ::kill(c.pid, SIGKILL);
    int status = c.reap();
    if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) {
      ++kills;
    } else {
      // It finished before the kill: that must have been a clean exit.
      ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
          << "child failed (status " << status << "): " << c.output;
    }
    // What has ended must be consistent already; unfinished sagas resume next.
    auto v = read_journal(dir);
    if (v.unfinished > 0)
      ++interrupted;
    auto rep = check(dir, v, false);
    ASSERT_THAT(rep, IsOk());
    ASSERT_TRUE(rep->ok()) << "after round " << rounds << " (seed " << seed << "):\n"
                           << rep->to_string();
  }
  EXPECT_GE(kills, kills_wanted);
  // The test would prove nothing if no kill ever hit a saga in flight.
  EXPECT_GT(interrupted, 0u);

  // The final run starts whatever a kill prevented from starting, resumes the
  // rest, and ends them all.
  const int total = static_cast<int>(rounds) * per_round;
  auto c = spawn_child(dir, 0, total, seed);
  while (c.read_some(100ms)) {
    ASSERT_LT(clock_type::now() - started, 10min);
  }
  int status = c.reap();
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << "final run failed (status " << status << "): " << c.output;

  auto v = read_journal(dir);
  ASSERT_EQ(v.sagas.size(), static_cast<size_t>(total));
  std::map<keel::saga_state, int> states;
  for (const auto& r : v.sagas) {
    ++states[r.state];
    EXPECT_TRUE(keel::is_terminal(r.state)) << r.id << " is " << keel::to_string(r.state);
    if (r.state == keel::saga_state::needs_intervention) {
      EXPECT_FALSE(r.reason.empty()) << r.id;
    }
  }
  auto rep = check(dir, v, true);
  ASSERT_THAT(rep, IsOk());
  EXPECT_TRUE(rep->ok()) << "seed " << seed << ":\n" << rep->to_string();
  EXPECT_GT(states[keel::saga_state::completed], 0);
  EXPECT_GT(states[keel::saga_state::rolled_back], 0);

  auto secs = std::chrono::duration<double>(clock_type::now() - started).count();
  std::cout << rounds << " runs, " << kills << " SIGKILLs (" << early_kills << " during start-up), "
            << interrupted << " left sagas in flight; " << total << " sagas:";
  for (auto& [s, n] : states)
    std::cout << ' ' << keel::to_string(s) << '=' << n;
  std::cout << "; " << rep->notes.size() << " need an operator; " << secs << " s\n";
  if (!HasFailure())
    fs::remove_all(dir);
}

} // namespace
