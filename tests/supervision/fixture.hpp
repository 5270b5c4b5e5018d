#pragma once

// A GoogleTest fixture running CAF's deterministic test coordinator: nothing
// runs until the test says so (`run()`), and time only moves with
// `advance(d)`. Supervisors started with `start()` are shut down (and their
// kill timers fired) when the test ends, so the actor system can be destroyed.

#include "keel/error.hpp"
#include "keel/supervision.hpp"

#include <caf/all.hpp>

#include <gtest/gtest.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace keel::testing {

class supervision_fixture : public ::testing::Test {
protected:
  struct config : caf::actor_system_config {
    config() {
      add_error_types(*this);
      set("scheduler.policy", caf::atom("testing"));
      set("logger.file-verbosity", caf::atom("quiet"));
    }
  };

  supervision_fixture()
      : sys(cfg), self(sys, true),
        sched(dynamic_cast<caf::scheduler::test_coordinator&>(sys.scheduler())) {
    sched.clock().current_time += std::chrono::hours(1); // time is never 0
  }

  ~supervision_fixture() override {
    for (auto& a : roots)
      caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
    for (int i = 0; i < 100 && (sched.run() > 0 || sched.trigger_timeouts() > 0); ++i) {
    }
  }

  /// Spawns a root supervisor (stopped at the end of the test) and runs until
  /// idle, so that its children have started.
  caf::actor start(supervisor_config sc) {
    auto sup = spawn_supervisor(sys, std::move(sc));
    roots.push_back(sup);
    run();
    return sup;
  }

  /// Runs every actor until no message is left (time does not move).
  size_t run() { return sched.run(); }

  /// Moves the clock by `d`, fires the timeouts now due, and runs until idle.
  void advance(caf::timespan d) {
    sched.advance_time(d);
    run();
  }

  /// Sends a request to `dest` from the test, runs until idle, and returns
  /// the reply (or the error reply, or an error when there was none).
  template <class T, class... Ts>
  expected<T> ask(const caf::actor& dest, Ts&&... xs) {
    auto handle = self->request(dest, std::chrono::seconds(86400), std::forward<Ts>(xs)...);
    run();
    if (self->mailbox().empty())
      return unknown_error("no reply arrived");
    std::optional<T> value;
    error err = unknown_error("no reply arrived");
    handle.receive([&](T& x) { value = std::move(x); },
                   [&](caf::error& x) { err = from_caf_error(x); });
    if (value)
      return std::move(*value);
    return err;
  }

  /// Sends `xs` to `dest` (no reply expected) and runs until idle.
  template <class... Ts>
  void tell(const caf::actor& dest, Ts&&... xs) {
    self->send(dest, std::forward<Ts>(xs)...);
    run();
  }

  /// The current address of the child at `path` under `sup`.
  expected<caf::actor> lookup(const caf::actor& sup, const std::string& path) {
    return ask<caf::actor>(sup, sup_lookup_atom::value, path);
  }

  /// A snapshot of the tree under `sup`.
  expected<tree_node> tree(const caf::actor& sup) {
    return ask<tree_node>(sup, sup_tree_atom::value);
  }

  config cfg;
  caf::actor_system sys;
  caf::scoped_actor self;
  caf::scheduler::test_coordinator& sched;
  std::vector<caf::actor> roots;
};

} // namespace keel::testing
