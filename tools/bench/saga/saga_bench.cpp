// Durable saga steps per second: keel's saga coordinator with group commit
// (the journal writer commits every batch that queued up while it was busy in
// one transaction) against the same coordinator with one transaction per
// batch (`coordinator_config::writer.max_group = 1`): the same binary, the
// same SQLite journal settings (WAL, durability full: an fsync per commit), a
// journal file on disk.
//
// - BM_keel_saga_steps/<n> (group commit, the default writer) vs
//   BM_baseline_saga_steps/<n> (max_group = 1: one commit per batch, i.e.
//   per durable step write; one name for both so that the ratio table pairs
//   them): n sagas
//   (1 or 64) of 4 trivial synchronous steps begin together; an iteration
//   ends when all n have completed. Items = steps (4 per saga); each step
//   costs two durable writes (step_started before, step_completed after),
//   plus one each for "created" and "completed" per saga.
// - saga_memory_in_flight: 2,000 sagas parked in an asynchronous step (a
//   request to an actor that answers only when told): the heap (glibc
//   mallinfo2: every arena, mmapped chunks included) and RSS grown per saga.
//   Reported as counters heap_bytes_per_saga and rss_bytes_per_saga.
//
// The journal goes to the temp directory unless that is a tmpfs (then fsync
// costs nothing and the comparison would mean nothing); then next to this
// binary. The path and file system show in the benchmark label.
//
//   build/release/tools/bench/keel-bench-saga --benchmark_repetitions=3
//
// Figures: docs/performance.md#sagas.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <benchmark/benchmark.h>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/response_promise.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>
#include <caf/stateful_actor.hpp>

#include <malloc.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "keel/error.hpp"
#include "keel/error/caf.hpp"
#include "keel/saga/coordinator.hpp"
#include "keel/saga/definition.hpp"
#include "keel/store/sqlite_journal.hpp"

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

struct config : caf::actor_system_config {
  config() {
    keel::add_error_types(*this);
    set("scheduler.max-threads", 2);
    set("logger.file-verbosity", caf::atom("quiet"));
    set("logger.console-verbosity", caf::atom("quiet"));
  }
};

constexpr long tmpfs_magic = 0x01021994;

/// Where journals go: the temp directory unless it is a tmpfs.
fs::path journal_dir() {
  auto tmp = fs::temp_directory_path();
  struct statfs st {};
  if (::statfs(tmp.c_str(), &st) == 0 && static_cast<long>(st.f_type) != tmpfs_magic)
    return tmp;
  return fs::canonical("/proc/self/exe").parent_path();
}

/// A fresh journal file (with its -wal and -shm) removed on destruction.
struct scratch_journal {
  fs::path path;
  std::shared_ptr<keel::store::journal> journal;

  explicit scratch_journal(const std::string& name, keel::store::durability level) {
    path = journal_dir() / ("keel-saga-bench-" + std::to_string(::getpid()) + "-" + name + ".db");
    remove();
    keel::store::sqlite_options opts;
    opts.level = level;
    auto j = keel::store::open_sqlite_journal(path.string(), opts);
    if (j)
      journal = std::move(*j);
    else
      error = keel::to_string(j.error());
  }

  ~scratch_journal() {
    journal.reset();
    remove();
  }

  void remove() {
    for (const char* suffix : {"", "-wal", "-shm", "-journal"})
      fs::remove(path.string() + suffix);
  }

  std::string error;
};

keel::saga::definition trivial_saga() {
  keel::saga::definition def{"bench"};
  for (const char* name : {"a", "b", "c", "d"})
    def.step(
        name, [](keel::saga::step_context&) -> keel::expected<void> { return {}; },
        [](keel::saga::step_context&) -> keel::expected<void> { return {}; });
  return def;
}

/// n sagas at a time, each to its end, per iteration.
void saga_steps(benchmark::State& state, size_t max_group, const std::string& name) {
  const auto concurrency = static_cast<int>(state.range(0));
  scratch_journal sj{name + "-" + std::to_string(concurrency), keel::store::durability::full};
  if (!sj.journal) {
    state.SkipWithError(sj.error.c_str());
    return;
  }
  config cfg;
  caf::actor_system sys{cfg};
  keel::saga::coordinator_config ccfg;
  ccfg.owner = "bench";
  ccfg.resume = false;
  ccfg.writer.max_group = max_group;
  auto coord = keel::saga::coordinator::start(sys, sj.journal, {trivial_saga()}, ccfg);
  if (!coord) {
    state.SkipWithError(keel::to_string(coord.error()).c_str());
    return;
  }
  uint64_t sagas = 0;
  caf::scoped_actor self{sys};
  for (auto _ : state) {
    // n clients begin at once (begin answers once its saga is recorded, so
    // sequential blocking begins would measure begin latency instead).
    std::vector<decltype(self->request(coord->actor(), 60s, keel::saga::begin_atom::value,
                                       std::string{}, std::string{}, std::string{}))>
        begun;
    for (int i = 0; i < concurrency; ++i)
      begun.push_back(self->request(coord->actor(), 60s, keel::saga::begin_atom::value,
                                    std::string{"bench"}, "s" + std::to_string(sagas + i),
                                    std::string{"{}"}));
    for (auto& h : begun) {
      keel::error err;
      h.receive([&](keel::error& e) { err = std::move(e); },
                [&](caf::error& e) { err = keel::from_caf_error(e); });
      if (err) {
        state.SkipWithError(keel::to_string(err).c_str());
        return;
      }
    }
    for (int i = 0; i < concurrency; ++i) {
      auto out = coord->wait("s" + std::to_string(sagas + i), 60s);
      if (!out || out->state != keel::saga_state::completed) {
        state.SkipWithError(out ? "a saga did not complete" : keel::to_string(out.error()).c_str());
        return;
      }
    }
    sagas += concurrency;
  }
  coord->stop();
  state.SetItemsProcessed(static_cast<int64_t>(sagas * 4));
  state.counters["sagas/s"] =
      benchmark::Counter(static_cast<double>(sagas), benchmark::Counter::kIsRate);
  state.SetLabel("durability=full, " + journal_dir().string());
}

void BM_keel_saga_steps(benchmark::State& state) {
  saga_steps(state, keel::store::writer_options{}.max_group, "group");
}

void BM_baseline_saga_steps(benchmark::State& state) {
  saga_steps(state, 1, "per-step");
}

// -- memory per in-flight saga ---------------------------------------------------------

using park_atom = caf::atom_constant<caf::atom("b_park")>;
using release_atom = caf::atom_constant<caf::atom("b_release")>;
using count_atom = caf::atom_constant<caf::atom("b_count")>;
using ok_atom = caf::atom_constant<caf::atom("b_ok")>;

struct parker_state {
  std::vector<caf::response_promise> parked;
  static inline const char* name = "bench.parker";
};

/// Answers `park_atom` requests only when `release_atom` arrives.
caf::behavior parker(caf::stateful_actor<parker_state>* self) {
  return {
      [=](park_atom) -> caf::response_promise {
        self->state.parked.push_back(self->make_response_promise());
        return self->state.parked.back();
      },
      [=](count_atom) { return self->state.parked.size(); },
      [=](release_atom) {
        for (auto& rp : self->state.parked)
          rp.deliver(ok_atom::value);
        self->state.parked.clear();
      },
  };
}

size_t heap_in_use() {
  auto mi = ::mallinfo2();
  return mi.uordblks + mi.hblkhd;
}

size_t rss_bytes() {
  std::ifstream statm{"/proc/self/statm"};
  size_t pages = 0, resident = 0;
  statm >> pages >> resident;
  return resident * static_cast<size_t>(::sysconf(_SC_PAGESIZE));
}

void BM_keel_saga_memory_in_flight(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  scratch_journal sj{"memory", keel::store::durability::off};
  if (!sj.journal) {
    state.SkipWithError(sj.error.c_str());
    return;
  }
  config cfg;
  caf::actor_system sys{cfg};
  auto park = sys.spawn(parker);
  keel::saga::definition def{"parked"};
  auto trivial = [](keel::saga::step_context&) -> keel::expected<void> { return {}; };
  def.step("a", trivial, trivial)
      .async_step(
          "b",
          [park](std::shared_ptr<keel::saga::step_context> ctx) {
            ctx->self()->request(park, caf::infinite, park_atom::value).then([ctx](ok_atom) {
              ctx->done();
            });
          },
          [](std::shared_ptr<keel::saga::step_context> ctx) { ctx->done(); })
      .step("c", trivial, trivial)
      .step("d", trivial, trivial);
  keel::saga::coordinator_config ccfg;
  ccfg.owner = "bench";
  ccfg.resume = false;
  auto coord = keel::saga::coordinator::start(sys, sj.journal, {def}, ccfg);
  if (!coord) {
    state.SkipWithError(keel::to_string(coord.error()).c_str());
    return;
  }
  caf::scoped_actor self{sys};
  auto parked = [&] {
    size_t k = 0;
    self->request(park, 10s, count_atom::value)
        .receive([&](size_t x) { k = x; }, [](caf::error&) {});
    return k;
  };
  auto run_batch = [&](const std::string& prefix, int count, bool measure) -> bool {
    for (int i = 0; i < count; ++i)
      if (!coord->begin("parked", prefix + std::to_string(i)))
        return false;
    auto deadline = std::chrono::steady_clock::now() + 60s;
    while (parked() < static_cast<size_t>(count)) {
      if (std::chrono::steady_clock::now() > deadline)
        return false;
      std::this_thread::sleep_for(5ms);
    }
    if (measure) {
      // Every saga is parked now: its runner, context and record are live.
      auto heap = heap_in_use();
      auto rss = rss_bytes();
      state.counters["heap_bytes_per_saga"] =
          (static_cast<double>(heap) - state.counters["heap_before"]) / count;
      state.counters["rss_bytes_per_saga"] =
          (static_cast<double>(rss) - state.counters["rss_before"]) / count;
    }
    self->send(park, release_atom::value);
    for (int i = 0; i < count; ++i) {
      auto out = coord->wait(prefix + std::to_string(i), 60s);
      if (!out || out->state != keel::saga_state::completed)
        return false;
    }
    return true;
  };
  for (auto _ : state) {
    state.PauseTiming();
    // A first round warms the allocator, CAF's pools and SQLite's cache.
    if (!run_batch("warm-", n, false)) {
      state.SkipWithError("warm-up round failed");
      return;
    }
    state.counters["heap_before"] = static_cast<double>(heap_in_use());
    state.counters["rss_before"] = static_cast<double>(rss_bytes());
    state.ResumeTiming();
    if (!run_batch("s-", n, true)) {
      state.SkipWithError("a parked saga did not complete");
      return;
    }
  }
  state.counters.erase("heap_before");
  state.counters.erase("rss_before");
  state.counters["in_flight"] = n;
  coord->stop();
  caf::anon_send_exit(park, caf::exit_reason::user_shutdown);
}

} // namespace

BENCHMARK(BM_keel_saga_steps)->Arg(1)->Arg(64)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_baseline_saga_steps)->Arg(1)->Arg(64)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_keel_saga_memory_in_flight)
    ->Arg(2000)
    ->Iterations(1)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
