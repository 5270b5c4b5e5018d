// Benchmarks for keel's supervision (stage cells behind a stable address)
// against what a raw CAF user would write. The shared main (tools/bench/support)
// pairs `BM_keel_<what>` with `BM_raw_caf_<what>` and prints the keel/raw ratio.
//
// - restart_latency: from sending a failing message to the replacement
//   instance answering the next request. keel: a root supervisor with one
//   stage (quarantine at once, no backoff, intensity never reached). Raw CAF:
//   a bare supervisor actor monitoring its child, spawning a replacement on
//   down_msg and telling the driver its new handle. Manual time: the reported
//   time is the latency; counters p50_us / p99_us over all iterations.
// - supervised_throughput: one driver sends N messages to a counting stage,
//   then asks for the count. Raw CAF: the same behavior in a plain actor.
// - request_roundtrip: the driver does request().receive() per message.
//
// The plain variants drive from the benchmark thread (a blocking
// scoped_actor), as a service calling in from outside would; their figures are
// dominated by waking CAF's idle workers (they poll with sleeps and are not
// signalled on an enqueue from outside the scheduler). The `_in_actor`
// variants drive from an actor inside the scheduler, which isolates what keel
// itself adds.
//
// Every benchmark builds its actor system once per run (2 scheduler threads:
// faster than CAF's default of 4 on these 2-core machines).

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/atom.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/stateful_actor.hpp>

#include "keel/error/caf.hpp"
#include "keel/error/format.hpp"
#include "keel/supervision.hpp"

namespace {

using namespace std::chrono_literals;

using fail_atom = caf::atom_constant<caf::atom("b_fail")>;
using ping_atom = caf::atom_constant<caf::atom("b_ping")>;
using count_atom = caf::atom_constant<caf::atom("b_count")>;
using child_atom = caf::atom_constant<caf::atom("b_child")>;
using go_atom = caf::atom_constant<caf::atom("b_go")>;

/// Upper bound for any single wait: a hang fails the benchmark, it does not
/// block the run.
constexpr auto wait_limit = 30s;

struct bench_config : caf::actor_system_config {
  bench_config() {
    keel::add_error_types(*this);
    set("scheduler.max-threads", 2);
  }
};

/// Counts the quarantined messages instead of keeping them (a memory sink
/// would grow by one entry per restart).
class counting_dead_letter_sink final : public keel::dead_letter_sink {
public:
  void put(keel::dead_letter) override { count_.fetch_add(1, std::memory_order_relaxed); }

  uint64_t count() const { return count_.load(std::memory_order_relaxed); }

private:
  std::atomic<uint64_t> count_{0};
};

// -- behaviors shared by keel stages and raw CAF actors -------------------------

/// Throws on `fail`; answers `ping` with the incarnation it was made for.
caf::behavior restartable_behavior(uint32_t incarnation) {
  return {
      [](fail_atom) { throw std::runtime_error("injected failure"); },
      [incarnation](ping_atom) { return incarnation; },
  };
}

/// Counts `int32_t` messages; `count` returns the total.
caf::behavior counter_behavior() {
  auto count = std::make_shared<uint64_t>(0);
  return {
      [count](int32_t) { ++*count; },
      [count](count_atom) { return *count; },
  };
}

/// A raw CAF child: an exception quits it with runtime_error, silently (the
/// default handler would print to stdout).
caf::behavior raw_restartable(caf::event_based_actor* self) {
  self->set_exception_handler([](caf::scheduled_actor*, std::exception_ptr&) -> caf::error {
    return caf::sec::runtime_error;
  });
  return restartable_behavior(0);
}

caf::behavior raw_counter(caf::event_based_actor*) {
  return counter_behavior();
}

/// A bare CAF supervisor: monitors its child and, when it goes down, spawns a
/// replacement and sends its handle to the driver.
struct raw_supervisor_state {
  caf::actor child;
  caf::actor driver;
};

caf::behavior raw_supervisor(caf::stateful_actor<raw_supervisor_state>* self, caf::actor driver) {
  self->state.driver = std::move(driver);
  self->state.child = self->spawn<caf::monitored>(raw_restartable);
  self->set_down_handler([self](caf::down_msg& x) {
    if (x.source != self->state.child.address())
      return;
    self->state.child = self->spawn<caf::monitored>(raw_restartable);
    self->send(self->state.driver, child_atom::value, self->state.child);
  });
  // Takes its child along when it is stopped.
  self->set_exit_handler([self](caf::exit_msg& x) {
    self->send_exit(self->state.child, x.reason);
    self->quit(x.reason);
  });
  return {
      [self](child_atom) { return self->state.child; },
  };
}

// -- helpers --------------------------------------------------------------------

/// A root supervisor with the one stage "s" made by `factory`: restarts never
/// escalate and never wait; a failed message is quarantined at once.
keel::supervision_tree start_tree(caf::actor_system& sys, keel::stage_factory factory,
                                  std::shared_ptr<keel::dead_letter_sink> sink) {
  keel::supervisor_config cfg;
  cfg.name = "bench";
  cfg.intensity = {.max_restarts = 1'000'000'000, .within = 1s};
  cfg.dead_letters = std::move(sink);
  cfg.children.push_back(keel::stage_spec("s", std::move(factory)).with_max_attempts(1));
  return keel::supervision_tree::start(sys, std::move(cfg));
}

/// Nearest-rank percentile (`q` in 0..1) of `xs`; sorts `xs`.
double percentile(std::vector<double>& xs, double q) {
  if (xs.empty())
    return 0;
  std::sort(xs.begin(), xs.end());
  auto rank = static_cast<size_t>(std::ceil(q * static_cast<double>(xs.size())));
  return xs[std::clamp<size_t>(rank, 1, xs.size()) - 1];
}

void report_latencies(benchmark::State& state, std::vector<double>& samples_us) {
  state.counters["p50_us"] = benchmark::Counter(percentile(samples_us, 0.50));
  state.counters["p99_us"] = benchmark::Counter(percentile(samples_us, 0.99));
}

std::string describe(const caf::error& err) {
  return keel::to_string(keel::from_caf_error(err));
}

/// Stops the tree; a failure (it escalated during the run) fails the benchmark.
void shutdown_tree(benchmark::State& state, keel::supervision_tree& tree) {
  if (auto why = tree.shutdown())
    state.SkipWithError(("supervision tree failed: " + keel::to_string(why)).c_str());
}

/// Runs `body(sys, stage)` against the stage "s" made by `factory` (see
/// `start_tree`) in a fresh actor system, then shuts the tree down.
template <class Body>
void with_keel_stage(benchmark::State& state, keel::stage_factory factory,
                     std::shared_ptr<keel::dead_letter_sink> sink, Body body) {
  bench_config cfg;
  caf::actor_system sys{cfg};
  auto tree = start_tree(sys, std::move(factory), std::move(sink));
  auto stage = tree.child("s");
  if (!stage) {
    state.SkipWithError(("no stage: " + keel::to_string(stage.error())).c_str());
    return;
  }
  body(sys, *stage);
  shutdown_tree(state, tree);
}

// -- restart latency ------------------------------------------------------------

void BM_keel_restart_latency(benchmark::State& state) {
  auto sink = std::make_shared<counting_dead_letter_sink>();
  with_keel_stage(
      state, [](keel::stage_context& ctx) { return restartable_behavior(ctx.restarts()); }, sink,
      [&](caf::actor_system& sys, const caf::actor& stage) {
        caf::scoped_actor self{sys};
        std::vector<double> samples_us;
        samples_us.reserve(1 << 16);
        uint32_t expected = 0;
        for (auto _ : state) {
          auto t0 = std::chrono::steady_clock::now();
          self->send(stage, fail_atom::value);
          uint32_t incarnation = 0;
          std::string failure;
          self->request(stage, wait_limit, ping_atom::value)
              .receive([&](uint32_t x) { incarnation = x; },
                       [&](caf::error& err) { failure = describe(err); });
          auto t1 = std::chrono::steady_clock::now();
          ++expected;
          if (!failure.empty() || incarnation != expected) {
            state.SkipWithError(failure.empty() ? "ping not answered by the replacement instance"
                                                : failure.c_str());
            break;
          }
          std::chrono::duration<double> elapsed = t1 - t0;
          state.SetIterationTime(elapsed.count());
          samples_us.push_back(elapsed.count() * 1e6);
        }
        report_latencies(state, samples_us);
        state.counters["quarantined"] = benchmark::Counter(static_cast<double>(sink->count()));
      });
}
BENCHMARK(BM_keel_restart_latency)->UseManualTime();

void BM_raw_caf_restart_latency(benchmark::State& state) {
  bench_config cfg;
  caf::actor_system sys{cfg};
  caf::scoped_actor self{sys};
  auto sup = sys.spawn(raw_supervisor, caf::actor{self});
  caf::actor child;
  self->request(sup, wait_limit, child_atom::value)
      .receive([&](caf::actor& x) { child = std::move(x); }, [](caf::error&) {});
  if (!child) {
    state.SkipWithError("no child");
    return;
  }
  std::vector<double> samples_us;
  samples_us.reserve(1 << 16);
  for (auto _ : state) {
    auto t0 = std::chrono::steady_clock::now();
    self->send(child, fail_atom::value);
    caf::actor replacement;
    self->receive([&](child_atom, caf::actor& x) { replacement = std::move(x); },
                  caf::after(wait_limit) >> [] {});
    std::string failure;
    if (!replacement || replacement == child) {
      failure = "no replacement child";
    } else {
      child = std::move(replacement);
      self->request(child, wait_limit, ping_atom::value)
          .receive([](uint32_t) {}, [&](caf::error& err) { failure = describe(err); });
    }
    auto t1 = std::chrono::steady_clock::now();
    if (!failure.empty()) {
      state.SkipWithError(failure.c_str());
      break;
    }
    std::chrono::duration<double> elapsed = t1 - t0;
    state.SetIterationTime(elapsed.count());
    samples_us.push_back(elapsed.count() * 1e6);
  }
  report_latencies(state, samples_us);
  self->send_exit(sup, caf::exit_reason::user_shutdown);
}
BENCHMARK(BM_raw_caf_restart_latency)->UseManualTime();

// -- restart latency, driven from inside the scheduler ---------------------------
//
// A blocking driver (scoped_actor) on the benchmark thread puts CAF's idle
// workers in the measured window: work-stealing workers are not woken by an
// enqueue from outside the scheduler, they poll with sleeps, which dominates
// the figures above. Here a driver actor times the window itself (send fail ->
// replacement's reply) and reports the elapsed nanoseconds; the benchmark
// thread only asks it for one restart per iteration.

int64_t nanoseconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0)
      .count();
}

/// Runs one timed restart per iteration through `driver` (`go` -> elapsed ns).
void run_driven_latency(benchmark::State& state, caf::actor_system& sys, const caf::actor& driver) {
  caf::scoped_actor self{sys};
  std::vector<double> samples_us;
  samples_us.reserve(1 << 16);
  for (auto _ : state) {
    int64_t ns = -1;
    std::string failure;
    self->request(driver, wait_limit, go_atom::value)
        .receive([&](int64_t x) { ns = x; }, [&](caf::error& err) { failure = describe(err); });
    if (!failure.empty() || ns < 0) {
      state.SkipWithError(failure.empty() ? "no timing" : failure.c_str());
      break;
    }
    state.SetIterationTime(static_cast<double>(ns) * 1e-9);
    samples_us.push_back(static_cast<double>(ns) * 1e-3);
  }
  report_latencies(state, samples_us);
  self->send_exit(driver, caf::exit_reason::user_shutdown);
}

struct keel_restart_driver_state {
  caf::actor stage;
  uint32_t expected = 0;
};

caf::behavior keel_restart_driver(caf::stateful_actor<keel_restart_driver_state>* self,
                                  caf::actor stage) {
  self->state.stage = std::move(stage);
  return {
      [self](go_atom) {
        auto rp = self->make_response_promise();
        auto expected = ++self->state.expected;
        auto t0 = std::chrono::steady_clock::now();
        self->send(self->state.stage, fail_atom::value);
        self->request(self->state.stage, wait_limit, ping_atom::value)
            .then(
                [rp, t0, expected](uint32_t incarnation) mutable {
                  auto ns = nanoseconds_since(t0);
                  if (incarnation == expected)
                    rp.deliver(ns);
                  else
                    rp.deliver(caf::make_error(caf::sec::runtime_error,
                                               "ping not answered by the replacement instance"));
                },
                [rp](caf::error& err) mutable { rp.deliver(std::move(err)); });
        return rp;
      },
  };
}

void BM_keel_restart_latency_in_actor(benchmark::State& state) {
  auto sink = std::make_shared<counting_dead_letter_sink>();
  with_keel_stage(
      state, [](keel::stage_context& ctx) { return restartable_behavior(ctx.restarts()); }, sink,
      [&](caf::actor_system& sys, const caf::actor& stage) {
        run_driven_latency(state, sys, sys.spawn(keel_restart_driver, stage));
        state.counters["quarantined"] = benchmark::Counter(static_cast<double>(sink->count()));
      });
}
BENCHMARK(BM_keel_restart_latency_in_actor)->UseManualTime();

struct raw_restart_driver_state {
  caf::actor supervisor;
  caf::actor child;
  caf::response_promise pending;
  std::chrono::steady_clock::time_point t0;
};

caf::behavior raw_restart_driver(caf::stateful_actor<raw_restart_driver_state>* self) {
  // Linked: the supervisor (and its child) stop with the driver.
  self->state.supervisor =
      self->spawn<caf::linked>(raw_supervisor, caf::actor_cast<caf::actor>(self));
  self->request(self->state.supervisor, wait_limit, child_atom::value)
      .await([self](caf::actor& child) { self->state.child = std::move(child); });
  return {
      [self](go_atom) {
        auto& st = self->state;
        st.pending = self->make_response_promise();
        st.t0 = std::chrono::steady_clock::now();
        self->send(st.child, fail_atom::value);
        return st.pending;
      },
      [self](child_atom, caf::actor& replacement) {
        auto& st = self->state;
        st.child = std::move(replacement);
        self->request(st.child, wait_limit, ping_atom::value)
            .then([self](
                      uint32_t) { self->state.pending.deliver(nanoseconds_since(self->state.t0)); },
                  [self](caf::error& err) { self->state.pending.deliver(std::move(err)); });
      },
  };
}

void BM_raw_caf_restart_latency_in_actor(benchmark::State& state) {
  bench_config cfg;
  caf::actor_system sys{cfg};
  run_driven_latency(state, sys, sys.spawn(raw_restart_driver));
}
BENCHMARK(BM_raw_caf_restart_latency_in_actor)->UseManualTime();

// -- throughput -----------------------------------------------------------------

constexpr int32_t messages_per_iteration = 100'000;

/// Sends `messages_per_iteration` messages to `target` per iteration, then
/// waits for its count.
void run_throughput(benchmark::State& state, caf::actor_system& sys, const caf::actor& target) {
  caf::scoped_actor self{sys};
  uint64_t expected = 0;
  for (auto _ : state) {
    for (int32_t i = 0; i < messages_per_iteration; ++i)
      self->send(target, i);
    expected += messages_per_iteration;
    uint64_t counted = 0;
    std::string failure;
    self->request(target, wait_limit, count_atom::value)
        .receive([&](uint64_t x) { counted = x; },
                 [&](caf::error& err) { failure = describe(err); });
    if (!failure.empty() || counted != expected) {
      state.SkipWithError(failure.empty() ? "lost messages" : failure.c_str());
      break;
    }
  }
  state.SetItemsProcessed(state.iterations() * messages_per_iteration);
}

void BM_keel_supervised_throughput(benchmark::State& state) {
  with_keel_stage(
      state, [](keel::stage_context&) { return counter_behavior(); },
      std::make_shared<counting_dead_letter_sink>(),
      [&](caf::actor_system& sys, const caf::actor& stage) { run_throughput(state, sys, stage); });
}
BENCHMARK(BM_keel_supervised_throughput)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_raw_caf_supervised_throughput(benchmark::State& state) {
  bench_config cfg;
  caf::actor_system sys{cfg};
  auto counter = sys.spawn(raw_counter);
  run_throughput(state, sys, counter);
  caf::anon_send_exit(counter, caf::exit_reason::user_shutdown);
}
BENCHMARK(BM_raw_caf_supervised_throughput)->UseRealTime()->Unit(benchmark::kMillisecond);

// -- request / response ---------------------------------------------------------

constexpr int requests_per_iteration = 10'000;

void run_roundtrips(benchmark::State& state, caf::actor_system& sys, const caf::actor& target) {
  caf::scoped_actor self{sys};
  for (auto _ : state) {
    std::string failure;
    for (int i = 0; i < requests_per_iteration && failure.empty(); ++i)
      self->request(target, wait_limit, ping_atom::value)
          .receive([](uint32_t) {}, [&](caf::error& err) { failure = describe(err); });
    if (!failure.empty()) {
      state.SkipWithError(failure.c_str());
      break;
    }
  }
  state.SetItemsProcessed(state.iterations() * requests_per_iteration);
}

void BM_keel_request_roundtrip(benchmark::State& state) {
  with_keel_stage(
      state, [](keel::stage_context& ctx) { return restartable_behavior(ctx.restarts()); },
      std::make_shared<counting_dead_letter_sink>(),
      [&](caf::actor_system& sys, const caf::actor& stage) { run_roundtrips(state, sys, stage); });
}
BENCHMARK(BM_keel_request_roundtrip)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_raw_caf_request_roundtrip(benchmark::State& state) {
  bench_config cfg;
  caf::actor_system sys{cfg};
  auto target = sys.spawn(raw_restartable);
  run_roundtrips(state, sys, target);
  caf::anon_send_exit(target, caf::exit_reason::user_shutdown);
}
BENCHMARK(BM_raw_caf_request_roundtrip)->UseRealTime()->Unit(benchmark::kMillisecond);

// Same, driven from inside the scheduler: a driver actor chains the requests
// with request().then() and answers the benchmark thread at the end.

struct roundtrip_driver_state {
  caf::actor target;
  int left = 0;
  caf::response_promise done;
};

void next_roundtrip(caf::stateful_actor<roundtrip_driver_state>* self) {
  auto& st = self->state;
  if (st.left == 0) {
    st.done.deliver(true);
    return;
  }
  --st.left;
  self->request(st.target, wait_limit, ping_atom::value)
      .then([self](uint32_t) { next_roundtrip(self); },
            [self](caf::error& err) { self->state.done.deliver(std::move(err)); });
}

caf::behavior roundtrip_driver(caf::stateful_actor<roundtrip_driver_state>* self,
                               caf::actor target) {
  self->state.target = std::move(target);
  return {
      [self](go_atom, int n) {
        self->state.left = n;
        self->state.done = self->make_response_promise();
        next_roundtrip(self);
        return self->state.done;
      },
  };
}

void run_driven_roundtrips(benchmark::State& state, caf::actor_system& sys,
                           const caf::actor& target) {
  caf::scoped_actor self{sys};
  auto driver = sys.spawn(roundtrip_driver, target);
  for (auto _ : state) {
    std::string failure;
    self->request(driver, wait_limit, go_atom::value, requests_per_iteration)
        .receive([](bool) {}, [&](caf::error& err) { failure = describe(err); });
    if (!failure.empty()) {
      state.SkipWithError(failure.c_str());
      break;
    }
  }
  state.SetItemsProcessed(state.iterations() * requests_per_iteration);
  self->send_exit(driver, caf::exit_reason::user_shutdown);
}

void BM_keel_request_roundtrip_in_actor(benchmark::State& state) {
  with_keel_stage(
      state, [](keel::stage_context& ctx) { return restartable_behavior(ctx.restarts()); },
      std::make_shared<counting_dead_letter_sink>(),
      [&](caf::actor_system& sys, const caf::actor& stage) {
        run_driven_roundtrips(state, sys, stage);
      });
}
BENCHMARK(BM_keel_request_roundtrip_in_actor)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_raw_caf_request_roundtrip_in_actor(benchmark::State& state) {
  bench_config cfg;
  caf::actor_system sys{cfg};
  auto target = sys.spawn(raw_restartable);
  run_driven_roundtrips(state, sys, target);
  caf::anon_send_exit(target, caf::exit_reason::user_shutdown);
}
BENCHMARK(BM_raw_caf_request_roundtrip_in_actor)->UseRealTime()->Unit(benchmark::kMillisecond);

} // namespace
