// The cost of a closed circuit breaker per call, against the same call made
// without a breaker. The shared main pairs `BM_keel_<what>` with
// `BM_baseline_<what>` (same suffix) and prints the ratio.
//
// The guarded call is trivial on purpose (a non-inlined function returning
// expected<int>): what is left is the breaker's own cost.
//
// - breaker_closed_call: `breaker.call(f)`: admission (one atomic load),
//   two reads of the steady clock to time f (slow-call detection), and the
//   outcome recorded in the count-based window (a mutex, a few instructions).
//   Single-threaded and with 2 threads sharing one breaker.
// - breaker_closed_permit: `try_acquire()` + `record_success(d)` with a
//   duration the caller already has (no clock reads): the check + record an
//   asynchronous caller pays.
// - breaker_open_refusal (keel only): the fail-fast path of an open breaker,
//   which builds the circuit_open error (its message allocates).
//
// Command and figures: docs/resilience.md#circuit-breaker.
//
//   build/release/tools/bench/keel-bench-resilience --benchmark_filter=breaker
//       --benchmark_repetitions=3 --benchmark_min_time=0.5   (one line)

#include <benchmark/benchmark.h>

#include <chrono>

#include "keel/resilience/breaker.hpp"

namespace {

[[gnu::noinline]] keel::expected<int> trivial_call(int x) {
  return x + 1;
}

keel::breaker_config bench_config() {
  keel::breaker_config cfg;
  cfg.name = "bench";
  return cfg; // defaults: count-based window of 100 calls
}

// Shared by the threads of one benchmark; built before any thread starts.
keel::circuit_breaker shared_breaker{bench_config()};

void BM_keel_breaker_closed_call(benchmark::State& state) {
  static keel::circuit_breaker single{bench_config()};
  auto& b = state.threads() > 1 ? shared_breaker : single;
  int i = 0;
  for (auto _ : state) {
    auto r = b.call([&] { return trivial_call(i++); });
    benchmark::DoNotOptimize(r);
  }
  if (b.state() != keel::breaker_state::closed)
    state.SkipWithError("the breaker left the closed state");
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_keel_breaker_closed_call);
BENCHMARK(BM_keel_breaker_closed_call)->Threads(2);

void BM_baseline_breaker_closed_call(benchmark::State& state) {
  int i = 0;
  for (auto _ : state) {
    auto r = trivial_call(i++);
    benchmark::DoNotOptimize(r);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_baseline_breaker_closed_call);
BENCHMARK(BM_baseline_breaker_closed_call)->Threads(2);

void BM_keel_breaker_closed_permit(benchmark::State& state) {
  static keel::circuit_breaker single{bench_config()};
  auto& b = state.threads() > 1 ? shared_breaker : single;
  int i = 0;
  for (auto _ : state) {
    auto p = b.try_acquire();
    auto r = trivial_call(i++);
    benchmark::DoNotOptimize(r);
    p->record_success(std::chrono::microseconds{1});
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_keel_breaker_closed_permit);
BENCHMARK(BM_keel_breaker_closed_permit)->Threads(2);

void BM_baseline_breaker_closed_permit(benchmark::State& state) {
  int i = 0;
  for (auto _ : state) {
    auto r = trivial_call(i++);
    benchmark::DoNotOptimize(r);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_baseline_breaker_closed_permit);
BENCHMARK(BM_baseline_breaker_closed_permit)->Threads(2);

void BM_keel_breaker_open_refusal(benchmark::State& state) {
  keel::circuit_breaker b{bench_config()};
  b.force_open();
  int i = 0;
  for (auto _ : state) {
    auto r = b.call([&] { return trivial_call(i++); });
    benchmark::DoNotOptimize(r);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_keel_breaker_open_refusal);

} // namespace
