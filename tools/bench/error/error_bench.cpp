// Benchmarks for keel::error aggregation and queries against what a raw CAF
// user would write. The shared main (tools/bench/support) pairs
// `BM_keel_<what>` with `BM_raw_caf_<what>` or `BM_baseline_<what>` (same
// arguments) and prints the keel/baseline ratio.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include <caf/atom.hpp>
#include <caf/error.hpp>
#include <caf/message.hpp>
#include <caf/sec.hpp>

#include "keel/error/aggregate.hpp"
#include "keel/error/error.hpp"

namespace {

// -- helpers --------------------------------------------------------------------

std::vector<keel::error> keel_errors(std::size_t n, keel::code c = keel::code::unavailable) {
  std::vector<keel::error> result;
  result.reserve(n);
  for (std::size_t i = 0; i < n; ++i)
    result.push_back(keel::make_error(c, "item " + std::to_string(i) + " failed"));
  return result;
}

std::vector<caf::error> caf_errors(std::size_t n, caf::sec c = caf::sec::runtime_error) {
  std::vector<caf::error> result;
  result.reserve(n);
  for (std::size_t i = 0; i < n; ++i)
    result.push_back(caf::make_error(c, std::string{"item " + std::to_string(i) + " failed"}));
  return result;
}

// -- join -----------------------------------------------------------------------

// Both sides copy the prebuilt vector inside the loop: join consumes its
// argument, and timing around the copy would cost more than the copy.
void BM_keel_join(benchmark::State& state) {
  auto n = static_cast<std::size_t>(state.range(0));
  auto errs = keel_errors(n);
  for (auto _ : state) {
    auto copy = errs;
    auto joined = keel::join(std::move(copy));
    benchmark::DoNotOptimize(joined);
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_keel_join)->Arg(1)->Arg(10)->Arg(1000);

// A raw CAF user reports many errors in one reply as a message holding a
// vector of caf::error.
void BM_raw_caf_join(benchmark::State& state) {
  auto n = static_cast<std::size_t>(state.range(0));
  auto errs = caf_errors(n);
  for (auto _ : state) {
    auto copy = errs;
    auto msg = caf::make_message(std::move(copy));
    benchmark::DoNotOptimize(msg);
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_raw_caf_join)->Arg(1)->Arg(10)->Arg(1000);

// -- is: wide -------------------------------------------------------------------

constexpr std::size_t wide = 1000;

// Worst case for the walk: the match is the last of 1000 children.
void BM_keel_is_wide(benchmark::State& state) {
  auto errs = keel_errors(wide - 1);
  errs.push_back(keel::not_found_error("the one"));
  auto err = keel::join(std::move(errs));
  for (auto _ : state) {
    bool found = keel::is(err, keel::code::not_found);
    benchmark::DoNotOptimize(found);
  }
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(wide));
}
BENCHMARK(BM_keel_is_wide);

void BM_raw_caf_is_wide(benchmark::State& state) {
  auto errs = caf_errors(wide - 1);
  errs.push_back(caf::make_error(caf::sec::unknown_type, std::string{"the one"}));
  const auto target = static_cast<uint8_t>(caf::sec::unknown_type);
  for (auto _ : state) {
    bool found = std::any_of(errs.begin(), errs.end(), [&](const caf::error& e) {
      return e.code() == target && e.category() == caf::atom("system");
    });
    benchmark::DoNotOptimize(found);
  }
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(wide));
}
BENCHMARK(BM_raw_caf_is_wide);

// -- is: deep -------------------------------------------------------------------

constexpr int deep = 100;

// Each wrap reclassifies (as a storage layer reporting `unavailable` would):
// a plain wrap copies its cause's code, so `is` would match at the top node
// and measure nothing. Both sides walk all 101 levels.
void BM_keel_is_deep(benchmark::State& state) {
  auto err = keel::not_found_error("bottom");
  for (int i = 0; i < deep; ++i)
    err = keel::wrap(std::move(err), keel::code::unavailable, "level " + std::to_string(i));
  for (auto _ : state) {
    bool found = keel::is(err, keel::code::not_found);
    benchmark::DoNotOptimize(found);
  }
  state.SetItemsProcessed(state.iterations() * deep);
}
BENCHMARK(BM_keel_is_deep);

// caf::error has no cause; the nearest raw equivalent nests each error in the
// context message of the one above it.
void BM_raw_caf_is_deep(benchmark::State& state) {
  const auto sys = caf::atom("system");
  const auto wrapper = static_cast<uint8_t>(caf::sec::runtime_error);
  const auto target = static_cast<uint8_t>(caf::sec::unknown_type);
  caf::error err{target, sys, caf::make_message(std::string{"bottom"})};
  for (int i = 0; i < deep; ++i)
    err = caf::error{wrapper, sys, caf::make_message(err)};
  for (auto _ : state) {
    bool found = false;
    const caf::error* cur = &err;
    for (;;) {
      if (cur->code() == target && cur->category() == sys) {
        found = true;
        break;
      }
      const auto& ctx = cur->context();
      if (!ctx.match_element<caf::error>(0))
        break;
      cur = &ctx.get_as<caf::error>(0);
    }
    benchmark::DoNotOptimize(found);
  }
  state.SetItemsProcessed(state.iterations() * deep);
}
BENCHMARK(BM_raw_caf_is_deep);

// -- error_buffer ---------------------------------------------------------------

constexpr std::size_t buffer_capacity = 1024;

/// The obvious alternative to error_buffer: the same keep-first-N-and-count
/// semantics behind a mutex.
class locked_error_buffer {
public:
  explicit locked_error_buffer(std::size_t capacity) : capacity_(capacity) {
    kept_.reserve(capacity); // error_buffer allocates its slots up front, too
  }

  void add(keel::error err) {
    if (!err)
      return;
    std::lock_guard<std::mutex> guard{mtx_};
    if (kept_.size() < capacity_)
      kept_.push_back(std::move(err));
    else
      ++overflow_;
  }

private:
  std::size_t capacity_;
  std::mutex mtx_;
  std::vector<keel::error> kept_;
  std::size_t overflow_ = 0;
};

// Shared by the threads of one benchmark; built before any thread starts
// (acceptable in a benchmark binary only). They fill up within the first
// iterations, so these two measure the steady "overflowing" path: what a
// pipeline hits under a flood of failures. The *_fill pair below measures the
// path that keeps errors.
keel::error_buffer shared_buffer{buffer_capacity};
locked_error_buffer shared_locked_buffer{buffer_capacity};

constexpr std::size_t inputs_per_thread = 64; // a power of two, for the mask below

void BM_keel_error_buffer_add(benchmark::State& state) {
  // Each thread reports its own failures, as pipeline workers would.
  auto errs = keel_errors(inputs_per_thread);
  std::size_t i = 0;
  for (auto _ : state)
    shared_buffer.add(errs[i++ & (inputs_per_thread - 1)]);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_keel_error_buffer_add)->Threads(2);

void BM_baseline_error_buffer_add(benchmark::State& state) {
  auto errs = keel_errors(inputs_per_thread);
  std::size_t i = 0;
  for (auto _ : state)
    shared_locked_buffer.add(errs[i++ & (inputs_per_thread - 1)]);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_baseline_error_buffer_add)->Threads(2);

void BM_keel_error_buffer_fill(benchmark::State& state) {
  auto errs = keel_errors(buffer_capacity);
  for (auto _ : state) {
    keel::error_buffer buf{buffer_capacity};
    for (const auto& e : errs)
      buf.add(e);
    benchmark::DoNotOptimize(buf);
  }
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(buffer_capacity));
}
BENCHMARK(BM_keel_error_buffer_fill);

void BM_baseline_error_buffer_fill(benchmark::State& state) {
  auto errs = keel_errors(buffer_capacity);
  for (auto _ : state) {
    locked_error_buffer buf{buffer_capacity};
    for (const auto& e : errs)
      buf.add(e);
    benchmark::DoNotOptimize(buf);
  }
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(buffer_capacity));
}
BENCHMARK(BM_baseline_error_buffer_fill);

} // namespace
