#pragma once

// Stages, workers and client actors shared by the deterministic supervision
// tests (supervisor_test.cpp, stage_test.cpp, shutdown_test.cpp).

#include "fixture.hpp"

#include "keel/testing/matchers.hpp"

#include <memory>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <string>
#include <vector>

namespace keel {

// Readable GoogleTest output for the supervision enums (found through ADL).
inline void PrintTo(directive d, std::ostream* os) {
  *os << to_string(d);
}
inline void PrintTo(event_kind k, std::ostream* os) {
  *os << to_string(k);
}
inline void PrintTo(child_state s, std::ostream* os) {
  *os << to_string(s);
}

} // namespace keel

namespace keel::testing {

using t_get_atom = caf::atom_constant<caf::atom("t_get")>;
using t_quit_atom = caf::atom_constant<caf::atom("t_quit")>;
using t_crash_atom = caf::atom_constant<caf::atom("t_crash")>;

/// Shared between a test and the instances of a stage it declares.
struct probe {
  int starts = 0;        // factory calls
  int handled = 0;       // messages handled successfully
  std::vector<int> seen; // every value a handler ran on, in order
};

/// A stage doubling ints; throws on negative values, returns an error on 0.
inline child_spec doubler(std::string id, std::shared_ptr<probe> p) {
  return stage_spec(std::move(id), [p](stage_context&) {
    ++p->starts;
    return caf::behavior{[p](int x) -> caf::result<int> {
      p->seen.push_back(x);
      if (x < 0)
        throw std::runtime_error("negative: " + std::to_string(x));
      if (x == 0)
        return to_caf_error(invalid_argument_error("zero"));
      ++p->handled;
      return x * 2;
    }};
  });
}

/// A stage keeping a running total (state captured by its behavior): an int
/// adds to it and answers the new total; 13 throws on its first attempt only
/// ("unlucky 13"), 99 throws on every attempt. `t_get` answers the total.
inline child_spec accumulator(std::string id, std::shared_ptr<probe> p) {
  return stage_spec(std::move(id), [p](stage_context& ctx) {
    ++p->starts;
    auto total = std::make_shared<int>(0);
    return caf::behavior{
        [p, total, &ctx](int x) -> int {
          p->seen.push_back(x);
          if ((x == 13 && ctx.attempt() == 1) || x == 99)
            throw std::runtime_error("unlucky " + std::to_string(x));
          ++p->handled;
          *total += x;
          return *total;
        },
        [total](t_get_atom) { return *total; },
    };
  });
}

/// What the recording workers report.
struct worker_log {
  int starts = 0;                  // factory calls
  std::vector<caf::actor> spawned; // every instance, in order
  /// Where instances note their exit (shared by the workers of a test).
  std::shared_ptr<std::vector<std::string>> exits = std::make_shared<std::vector<std::string>>();
};

/// A worker factory: a plain CAF actor answering `x` with `x + 1`, exiting
/// normally on `t_quit` and abnormally (internal error) on `t_crash`. Its exit
/// is noted as `name` in `exits`. With `trap_exit` it ignores exit messages
/// (only a kill stops it).
inline worker_factory recording_worker(std::string name, std::shared_ptr<worker_log> log,
                                       bool trap_exit = false) {
  return [name, log, trap_exit](caf::actor_system& sys) {
    ++log->starts;
    auto a = sys.spawn([trap_exit](caf::event_based_actor* s) -> caf::behavior {
      if (trap_exit)
        s->set_exit_handler([](caf::exit_msg&) {});
      return {
          [s](t_quit_atom) { s->quit(); },
          [s](t_crash_atom) { s->quit(to_caf_error(internal_error("worker crashed"))); },
          [](int x) { return x + 1; },
      };
    });
    a->attach_functor([name, exits = log->exits](const caf::error&) { exits->push_back(name); });
    log->spawned.push_back(a);
    return a;
  };
}

/// The replies a client actor got, in arrival order, as "x=>y" or
/// "x=>!code" (the top code of the error).
struct reply_log {
  std::vector<std::string> lines;
  std::vector<error> errors;
};

/// The fixture of the supervision tests: adds client and watcher actors,
/// which are killed when the test ends.
class supervision_test : public supervision_fixture {
protected:
  /// A root config named "root" reporting to `rec` and `dead`.
  keel::supervisor_config root_config(keel::restart_intensity intensity = {}) {
    keel::supervisor_config sc;
    sc.name = "root";
    sc.events = rec;
    sc.dead_letters = dead;
    sc.intensity = intensity;
    return sc;
  }

  std::shared_ptr<keel::event_recorder> rec = std::make_shared<keel::event_recorder>();
  std::shared_ptr<keel::memory_dead_letter_sink> dead =
      std::make_shared<keel::memory_dead_letter_sink>();

  ~supervision_test() override {
    for (auto& a : roots)
      caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
    drain();
    for (auto& a : helpers)
      caf::anon_send_exit(a, caf::exit_reason::kill);
    drain();
  }

  void drain() {
    for (int i = 0; i < 100 && (sched.run() > 0 || sched.trigger_timeouts() > 0); ++i) {
    }
  }

  /// Spawns a client that sends the requests `xs` to `dest` in order, and runs
  /// until idle; its replies go to the returned log.
  std::shared_ptr<reply_log> request_all(const caf::actor& dest, std::vector<int> xs) {
    auto log = std::make_shared<reply_log>();
    auto c = sys.spawn([dest, xs, log](caf::event_based_actor* s) {
      for (int x : xs)
        s->request(dest, caf::infinite, x)
            .then(
                [x, log](int y) {
                  log->lines.push_back(std::to_string(x) + "=>" + std::to_string(y));
                },
                [x, log](caf::error& e) {
                  auto err = from_caf_error(e);
                  log->lines.push_back(std::to_string(x) + "=>!"
                                       + std::string{keel::to_string(err.code())});
                  log->errors.push_back(err);
                });
    });
    helpers.push_back(c);
    run();
    return log;
  }

  /// Watches `a`: the result holds its exit reason once it is down.
  std::shared_ptr<std::optional<caf::error>> watch(const caf::actor& a) {
    auto out = std::make_shared<std::optional<caf::error>>();
    auto w = sys.spawn([a, out](caf::event_based_actor* s) -> caf::behavior {
      s->monitor(a);
      s->set_down_handler([s, out](caf::down_msg& m) {
        *out = m.reason;
        s->quit();
      });
      return {[](int) {}};
    });
    helpers.push_back(w);
    run();
    return out;
  }

  /// A plain actor answering `x` with `x` (for stages that make requests).
  caf::actor echo() {
    auto e = sys.spawn([]() -> caf::behavior { return {[](int x) { return x; }}; });
    helpers.push_back(e);
    return e;
  }

  std::vector<caf::actor> helpers;
};

/// Events of kind `k` for `child` (every child when empty).
inline std::vector<supervision_event> events_of(const event_recorder& rec, event_kind k,
                                                std::string_view child = {}) {
  std::vector<supervision_event> out;
  for (auto& e : rec.events())
    if (e.kind == k && (child.empty() || e.child == child))
      out.push_back(e);
  return out;
}

/// The kinds of all events about `child`, in order.
inline std::vector<event_kind> kinds_of(const event_recorder& rec, std::string_view child) {
  std::vector<event_kind> out;
  for (auto& e : rec.events())
    if (e.child == child)
      out.push_back(e.kind);
  return out;
}

/// The decisions of the `failed` events about `child`, in order.
inline std::vector<directive> decisions_of(const event_recorder& rec, std::string_view child) {
  std::vector<directive> out;
  for (auto& e : events_of(rec, event_kind::failed, child))
    out.push_back(e.decision);
  return out;
}

} // namespace keel::testing
