// Randomised invariant tests of pipeline runs on CAF's real scheduler (also
// run under TSan).
//
// One base seed (printed; KEEL_TEST_SEED=<n> replays) derives the sub-seeds;
// each sub-seed is one complete run whose every parameter (items, batch size,
// credit, stages, workers, ordering, error policy, retries, faults,
// cancellation) follows from it. KEEL_TEST_SUBSEED=<n> runs just that one
// (a failure prints it with the whole parameter set), KEEL_TEST_REPEAT=<k>
// k times; KEEL_TEST_TRACE=1 prints every stage call and
// KEEL_TEST_HANG_GUARD_S=<s> shortens the hang guard (30 s).
//
// Faults are a function of (sub-seed, item, stage, attempt), so the test
// knows what each call of a stage function did; the stage functions record
// what they saw (calls per item and stage, passes, drops, throws). Whatever
// the timing, every input must end exactly once, as what the report says,
// with the errors, classes and attempts the fault plan implies; the run must
// return, no actor of it may be left running, and its actors must release
// what they hold (the stage functions, hence the items and records).

#include "../test_env.hpp"
#include "helpers.hpp"

#include "keel/error.hpp"
#include "keel/pipeline.hpp"

#include <caf/all.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <any>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <initializer_list>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

using namespace std::chrono_literals;

namespace {

using keel::code;
using keel::error_class;
using keel::policy_mode;

using keel_test::test_scale;
using keel_test::test_seed;

/// KEEL_TEST_SUBSEED=<n>: run only the run of that sub-seed.
std::optional<uint64_t> test_subseed() {
  if (const char* env = std::getenv("KEEL_TEST_SUBSEED"))
    return std::strtoull(env, nullptr, 10);
  return std::nullopt;
}

/// The hang guard of a run (KEEL_TEST_HANG_GUARD_S, default 30 s).
std::chrono::seconds hang_guard() {
  if (const char* env = std::getenv("KEEL_TEST_HANG_GUARD_S"))
    return std::chrono::seconds(std::max<long long>(1, std::strtoll(env, nullptr, 10)));
  return 30s;
}

/// KEEL_TEST_TRACE=1: print every stage call (to replay one sub-seed).
bool test_trace() {
  static const bool on = std::getenv("KEEL_TEST_TRACE") != nullptr;
  return on;
}

uint64_t mix(uint64_t x) { // splitmix64 finaliser
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

/// A small deterministic generator of parameters.
struct param_rng {
  uint64_t state;

  uint64_t next() { return mix(state++); }

  /// Uniform in [lo, hi].
  uint64_t in(uint64_t lo, uint64_t hi) { return lo + next() % (hi - lo + 1); }

  /// True with probability `pct` percent.
  bool chance(uint64_t pct) { return next() % 100 < pct; }

  template <class T>
  T pick(std::initializer_list<T> xs) {
    return *(xs.begin() + next() % xs.size());
  }
};

using keel_test::config;
using keel_test::eventually;

// -- parameters ----------------------------------------------------------------------

enum class kind : uint8_t { map, filter, flat_map };

const char* name_of(kind k) {
  switch (k) {
    case kind::map:
      return "map";
    case kind::filter:
      return "filter";
    case kind::flat_map:
      return "flat_map";
  }
  return "?";
}

enum class cancel_kind : uint8_t { none, caller, in_stage, deadline };

const char* name_of(cancel_kind k) {
  switch (k) {
    case cancel_kind::none:
      return "none";
    case cancel_kind::caller:
      return "caller";
    case cancel_kind::in_stage:
      return "in_stage";
    case cancel_kind::deadline:
      return "deadline";
  }
  return "?";
}

struct stage_param {
  kind k = kind::map;
  uint32_t workers = 1;
  bool ordered = false;
  /// Stage credit override (0: the run's).
  uint32_t credit = 0;
};

struct params {
  uint64_t seed = 0;
  uint32_t items = 0;
  uint32_t batch_size = 1;
  uint32_t credit = 1;
  std::vector<stage_param> stages;
  bool ordered_results = false;
  policy_mode mode = policy_mode::hybrid;
  uint32_t max_attempts = 1;
  uint32_t backoff_us = 0;
  bool budget_unlimited = true;
  double budget_ratio = 0;
  uint64_t budget_min = 0;
  /// Per call, in 1/1000: a thrown exception, a returned error.
  uint32_t throw_permille = 0;
  uint32_t error_permille = 0;
  /// Share of returned errors that are `internal` (critical under hybrid), %.
  uint32_t internal_pct = 0;
  /// Items a filter stage drops, %.
  uint32_t filter_pct = 0;
  cancel_kind cancel = cancel_kind::none;
  /// caller: sleep before cancel(); deadline: the deadline.
  uint32_t cancel_us = 0;
  /// in_stage: the item and stage whose first attempt cancels the run.
  uint64_t cancel_item = 0;
  uint32_t cancel_stage = 0;
  uint32_t latency_sample = 64;
  size_t max_errors = 100;
  bool progress = false;

  bool one_to_one() const {
    return std::none_of(stages.begin(), stages.end(),
                        [](const stage_param& s) { return s.k == kind::flat_map; });
  }

  std::string describe() const {
    std::ostringstream os;
    os << "sub-seed " << seed << ": items " << items << ", batch_size " << batch_size << ", credit "
       << credit << ", stages [";
    for (size_t i = 0; i < stages.size(); ++i) {
      const auto& s = stages[i];
      os << (i > 0 ? ", " : "") << name_of(s.k) << " x" << s.workers
         << (s.ordered ? " ordered" : "") << (s.credit > 0 ? " credit " : "");
      if (s.credit > 0)
        os << s.credit;
    }
    os << "], ordered_results " << ordered_results << ", policy " << keel::to_string(mode)
       << ", max_attempts " << max_attempts << ", backoff " << backoff_us << "us, budget ";
    if (budget_unlimited)
      os << "unlimited";
    else
      os << "{ratio " << budget_ratio << ", min " << budget_min << "}";
    os << ", faults: throw " << throw_permille << "/1000 error " << error_permille
       << "/1000 (internal " << internal_pct << "%), filter " << filter_pct << "%, cancel "
       << name_of(cancel);
    if (cancel == cancel_kind::caller || cancel == cancel_kind::deadline)
      os << " after " << cancel_us << "us";
    if (cancel == cancel_kind::in_stage)
      os << " at item " << cancel_item << " in stage " << cancel_stage;
    os << ", latency_sample " << latency_sample << ", max_errors " << max_errors << ", progress "
       << progress;
    return os.str();
  }
};

/// The parameters of the randomised runs (small runs, every feature).
params small_params(uint64_t seed) {
  param_rng g{seed};
  params p;
  p.seed = seed;
  p.items = g.chance(2) ? 0 : static_cast<uint32_t>(g.in(1, 400));
  p.batch_size =
      g.chance(30) ? static_cast<uint32_t>(g.in(1, 4)) : static_cast<uint32_t>(g.in(1, 64));
  p.credit = static_cast<uint32_t>(g.in(1, 4));
  const auto n_stages = g.in(1, 3);
  for (uint64_t i = 0; i < n_stages; ++i) {
    stage_param s;
    s.k = g.chance(60) ? kind::map : kind::filter;
    s.workers = static_cast<uint32_t>(g.in(1, 3));
    s.ordered = g.chance(50);
    s.credit = g.chance(25) ? static_cast<uint32_t>(g.in(1, 4)) : 0;
    p.stages.push_back(s);
  }
  if (g.chance(10)) // the flat_map variant, checked by counts
    p.stages[g.next() % p.stages.size()].k = kind::flat_map;
  p.ordered_results = g.chance(40);
  p.mode = g.pick(
      {policy_mode::fail_fast, policy_mode::collect_all, policy_mode::hybrid, policy_mode::hybrid});
  p.max_attempts = static_cast<uint32_t>(g.in(1, 3));
  p.backoff_us = static_cast<uint32_t>(g.in(0, 50));
  p.budget_unlimited = g.chance(50);
  p.budget_ratio = static_cast<double>(g.in(0, 20)) / 100.0;
  p.budget_min = g.in(0, 10);
  p.throw_permille = g.pick<uint32_t>({0, 0, 2, 10, 40});
  p.error_permille = g.pick<uint32_t>({0, 5, 20, 80, 250});
  if (p.mode == policy_mode::fail_fast && g.chance(70)) { // let some runs get far
    p.throw_permille /= 10;
    p.error_permille /= 10;
  }
  p.internal_pct = g.pick<uint32_t>({0, 0, 3, 20});
  p.filter_pct = g.pick<uint32_t>({0, 10, 50, 90});
  p.cancel = g.pick(
      {cancel_kind::none, cancel_kind::caller, cancel_kind::in_stage, cancel_kind::deadline});
  // Skewed towards short delays: most runs take a few milliseconds.
  p.cancel_us = static_cast<uint32_t>(
      (p.cancel == cancel_kind::deadline ? g.in(0, 5000) : g.in(0, 3000)) >> g.in(0, 3));
  p.cancel_item = p.items > 0 ? g.next() % p.items : 0;
  p.cancel_stage = static_cast<uint32_t>(g.next() % p.stages.size());
  p.latency_sample = static_cast<uint32_t>(g.pick<uint64_t>({1, 7, 64}));
  p.max_errors = static_cast<size_t>(g.pick<uint64_t>({1, 3, 100}));
  p.progress = g.chance(20);
  return p;
}

/// The parameters of the cancellation stress runs: a larger pipeline, few
/// faults, always cancelled at a random moment: by the caller after a random
/// delay, by a deadline, or from a stage when it reaches a random item (a
/// moment spread evenly over the run whatever the machine's speed).
params stress_params(uint64_t seed, uint32_t items) {
  param_rng g{seed};
  params p;
  p.seed = seed;
  p.items = items;
  p.batch_size = static_cast<uint32_t>(g.in(8, 256));
  p.credit = static_cast<uint32_t>(g.in(1, 4));
  for (auto k : {kind::map, kind::filter, kind::map}) {
    stage_param s;
    s.k = k;
    s.workers = static_cast<uint32_t>(g.in(1, 3));
    s.ordered = g.chance(50);
    p.stages.push_back(s);
  }
  p.ordered_results = g.chance(50);
  p.mode = g.pick({policy_mode::collect_all, policy_mode::hybrid});
  p.max_attempts = static_cast<uint32_t>(g.in(1, 3));
  p.backoff_us = static_cast<uint32_t>(g.in(0, 50));
  p.budget_unlimited = true;
  p.throw_permille = g.pick<uint32_t>({0, 1});
  p.error_permille = g.pick<uint32_t>({0, 2, 10});
  p.internal_pct = 0;
  p.filter_pct = g.pick<uint32_t>({0, 30});
  p.cancel = g.pick({cancel_kind::caller, cancel_kind::caller, cancel_kind::in_stage,
                     cancel_kind::in_stage, cancel_kind::deadline});
  p.cancel_us = static_cast<uint32_t>(g.in(0, 50'000) >> g.in(0, 3));
  p.cancel_item = g.next() % std::max<uint32_t>(1, items);
  p.cancel_stage = static_cast<uint32_t>(g.next() % p.stages.size());
  p.latency_sample = 64;
  p.max_errors = 100;
  p.progress = g.chance(30);
  return p;
}

// -- the fault plan ----------------------------------------------------------------------

enum class fault : uint8_t { none, raise, unavailable, invalid_argument, already_exists, internal };

code code_of(fault f) {
  switch (f) {
    case fault::none:
      return code::ok;
    case fault::raise:
      return code::panic;
    case fault::unavailable:
      return code::unavailable;
    case fault::invalid_argument:
      return code::invalid_argument;
    case fault::already_exists:
      return code::already_exists;
    case fault::internal:
      return code::internal;
  }
  return code::unknown;
}

/// What a call of stage `stage` on item `id` at attempt `attempt` does.
fault fault_of(const params& p, uint64_t id, uint32_t stage, uint32_t attempt) {
  auto h = mix(p.seed ^ mix((id << 8) ^ (uint64_t{stage} << 4) ^ attempt));
  auto r = static_cast<uint32_t>(h % 1000);
  if (r < p.throw_permille)
    return fault::raise;
  if (r >= p.throw_permille + p.error_permille)
    return fault::none;
  auto c = (h >> 20) % 100;
  if (c < p.internal_pct)
    return fault::internal;
  switch ((h >> 40) % 4) {
    case 0:
    case 1:
      return fault::unavailable;
    case 2:
      return fault::invalid_argument;
    default:
      return fault::already_exists;
  }
}

/// Whether filter stage `stage` drops item `id`.
bool drops(const params& p, uint64_t id, uint32_t stage) {
  return mix(~p.seed ^ mix(id * 16 + stage)) % 100 < p.filter_pct;
}

/// Children a flat_map stage makes of item `id` (0: the item is filtered).
uint32_t children_of(const params& p, uint64_t id) {
  return static_cast<uint32_t>(mix(p.seed ^ 0xf1a7ULL ^ mix(id)) % 4);
}

/// The class the run's policy gives an error code.
error_class class_of(policy_mode m, code c) {
  switch (m) {
    case policy_mode::fail_fast:
      return error_class::critical;
    case policy_mode::collect_all:
      return error_class::item;
    case policy_mode::hybrid:
      if (c == code::internal)
        return error_class::critical;
      if (c == code::panic)
        return error_class::poison;
      if (c == code::already_exists)
        return error_class::skip;
      return error_class::item;
  }
  return error_class::item;
}

bool retryable(fault f) {
  return f == fault::raise || f == fault::unavailable;
}

// -- what the stage functions saw ----------------------------------------------------------

/// The value of an item: its input position and the map stages it passed.
struct item {
  uint64_t id = 0;
  uint32_t hops = 0;
};

/// Shared by the test and the stage functions of one run.
struct world {
  explicit world(params ps)
      : p(std::move(ps)), n(p.items), s(p.stages.size()), calls(n * s), passed(n * s),
        dropped(n * s) {}

  size_t at(uint64_t id, uint32_t stage) const { return id * s + stage; }

  /// Bookkeeping common to every call; throws when the plan says so.
  fault on_call(const item& x, keel::item_context& ctx, uint32_t stage) {
    const auto id = ctx.id();
    if (id < n) {
      if (x.id != id || ctx.item().origin != id)
        id_mismatch.fetch_add(1);
      auto k = calls[at(id, stage)].fetch_add(1) + 1;
      if (k != ctx.attempt()) {
        attempt_mismatch.fetch_add(1);
        std::lock_guard<std::mutex> g{note_mtx};
        if (notes.size() < 10)
          notes.push_back("item " + std::to_string(id) + " stage " + std::to_string(stage)
                          + ": call " + std::to_string(k) + " has attempt "
                          + std::to_string(ctx.attempt()));
      }
    }
    if (ctx.stage() != stage_names[stage])
      id_mismatch.fetch_add(1);
    if (p.cancel == cancel_kind::in_stage && id == p.cancel_item && stage == p.cancel_stage
        && ctx.attempt() == 1)
      request_cancel();
    auto f = fault_of(p, id, stage, ctx.attempt());
    if (test_trace()) {
      std::lock_guard<std::mutex> g{note_mtx};
      std::fprintf(stderr, "call: item %llu stage %u worker %u attempt %u fault %d\n",
                   static_cast<unsigned long long>(id), stage, ctx.worker(), ctx.attempt(),
                   static_cast<int>(f));
    }
    if (f != fault::none)
      faults.fetch_add(1);
    if (f == fault::raise) {
      throws.fetch_add(1);
      throw std::runtime_error("injected exception on item " + std::to_string(id));
    }
    return f;
  }

  /// The stage function succeeded on `id`.
  void pass(uint64_t id, uint32_t stage) {
    if (id < n && passed[at(id, stage)].exchange(1) != 0)
      double_end.fetch_add(1);
  }

  /// A filter (or an empty flat_map) dropped `id`.
  void drop(uint64_t id, uint32_t stage) {
    if (id < n && dropped[at(id, stage)].exchange(1) != 0)
      double_end.fetch_add(1);
  }

  static keel::error error_of(fault f, uint64_t id) {
    auto what = "injected error on item " + std::to_string(id);
    switch (f) {
      case fault::unavailable:
        return keel::unavailable_error(what);
      case fault::invalid_argument:
        return keel::invalid_argument_error(what);
      case fault::already_exists:
        return keel::already_exists_error(what);
      case fault::internal:
        return keel::internal_error(what);
      default:
        return keel::unknown_error(what);
    }
  }

  void request_cancel() {
    std::lock_guard<std::mutex> g{ctl_mtx};
    cancel_requested = true;
    if (ctl)
      ctl->cancel();
  }

  /// Called by the test once the run has started.
  void set_control(std::shared_ptr<keel::run_control> c) {
    std::lock_guard<std::mutex> g{ctl_mtx};
    ctl = std::move(c);
    if (cancel_requested)
      ctl->cancel();
  }

  const params p;
  const size_t n;
  const size_t s;
  std::vector<std::string> stage_names;
  /// Per (item, stage): calls of the stage function, successes, drops.
  std::vector<std::atomic<uint32_t>> calls;
  std::vector<std::atomic<uint8_t>> passed;
  std::vector<std::atomic<uint8_t>> dropped;
  std::atomic<uint64_t> throws{0};
  std::atomic<uint64_t> faults{0};
  std::atomic<uint64_t> id_mismatch{0};
  std::atomic<uint64_t> attempt_mismatch{0};
  std::atomic<uint64_t> double_end{0};
  std::atomic<uint64_t> filter_drops{0};
  std::atomic<uint64_t> fm_empty{0};
  std::atomic<uint64_t> fm_consumed{0};
  std::atomic<uint64_t> fm_created{0};
  std::atomic<uint64_t> dead_letter_calls{0};
  std::atomic<uint64_t> progress_calls{0};
  std::atomic<uint64_t> progress_wrong{0};
  std::mutex note_mtx;
  std::vector<std::string> notes;
  std::mutex ctl_mtx;
  bool cancel_requested = false;
  std::shared_ptr<keel::run_control> ctl;
};

struct map_fn {
  std::shared_ptr<world> w;
  uint32_t stage;

  keel::expected<item> operator()(const item& x, keel::item_context& ctx) const {
    auto f = w->on_call(x, ctx, stage);
    if (f != fault::none)
      return world::error_of(f, ctx.id());
    w->pass(ctx.id(), stage);
    return item{x.id, x.hops + 1};
  }
};

struct filter_fn {
  std::shared_ptr<world> w;
  uint32_t stage;

  keel::expected<bool> operator()(const item& x, keel::item_context& ctx) const {
    auto f = w->on_call(x, ctx, stage);
    if (f != fault::none)
      return world::error_of(f, ctx.id());
    if (drops(w->p, ctx.id(), stage)) {
      w->filter_drops.fetch_add(1);
      w->drop(ctx.id(), stage);
      return false;
    }
    w->pass(ctx.id(), stage);
    return true;
  }
};

struct flat_map_fn {
  std::shared_ptr<world> w;
  uint32_t stage;

  keel::expected<std::vector<item>> operator()(const item& x, keel::item_context& ctx) const {
    auto f = w->on_call(x, ctx, stage);
    if (f != fault::none)
      return world::error_of(f, ctx.id());
    auto k = children_of(w->p, ctx.id());
    if (k == 0) {
      w->fm_empty.fetch_add(1);
      w->drop(ctx.id(), stage);
    } else {
      w->fm_consumed.fetch_add(1);
      w->fm_created.fetch_add(k);
      w->pass(ctx.id(), stage);
    }
    return std::vector<item>(k, item{x.id, x.hops + 1});
  }
};

// -- a run and its checks --------------------------------------------------------------------

/// Violations of one run, each with the line of the check.
class violations {
public:
  std::ostream& add(int line, const char* what) {
    if (list_.size() >= 40) {
      ++dropped_;
      sink_.str({});
      return sink_;
    }
    list_.emplace_back();
    list_.back() << "line " << line << ": " << what << ": ";
    return list_.back();
  }

  bool empty() const { return list_.empty(); }

  std::string text() const {
    std::string s;
    for (const auto& x : list_)
      s += "  " + x.str() + "\n";
    if (dropped_ > 0)
      s += "  (" + std::to_string(dropped_) + " more)\n";
    return s;
  }

private:
  std::deque<std::ostringstream> list_;
  std::ostringstream sink_;
  size_t dropped_ = 0;
};

// Streams a violation when `cond` does not hold (a `for`, not an `if`, so
// that no `else` can pair with an enclosing `if`).
#define INV(cond)                                                                                  \
  for (bool inv_ok_ = static_cast<bool>(cond); !inv_ok_; inv_ok_ = true)                           \
  v.add(__LINE__, #cond)

/// Totals over runs, to show what the runs covered.
struct tally {
  uint64_t runs = 0;
  uint64_t inputs = 0;
  uint64_t succeeded = 0;
  uint64_t failed = 0;
  uint64_t dead = 0;
  uint64_t skipped = 0;
  uint64_t filtered = 0;
  uint64_t cancelled_items = 0;
  uint64_t not_started = 0;
  uint64_t cancelled_runs = 0;
  uint64_t failed_fast_runs = 0;
  uint64_t throws = 0;
  uint64_t restarts = 0;
  uint64_t retries = 0;
  uint64_t flat_map_runs = 0;

  void print(std::ostream& os) const {
    os << runs << " runs, " << inputs << " inputs: " << succeeded << " succeeded, " << failed
       << " failed, " << dead << " dead-lettered, " << skipped << " skipped, " << filtered
       << " filtered, " << cancelled_items << " cancelled, " << not_started
       << " not started; runs cancelled " << cancelled_runs << ", failed fast " << failed_fast_runs
       << ", with flat_map " << flat_map_runs << "; " << throws << " exceptions, " << restarts
       << " restarts, " << retries << " retries\n";
  }
};

struct outcome {
  violations v;
  /// The run never finished: the actor system cannot be used any more.
  bool hung = false;
  /// Expires once the run's actors have released the stage functions.
  std::weak_ptr<world> state;
};

/// Where an item ended, according to the report.
enum class where : uint8_t { output, failure, dead, skipped, cancelled };

const char* name_of(where w) {
  switch (w) {
    case where::output:
      return "output";
    case where::failure:
      return "failure";
    case where::dead:
      return "dead letter";
    case where::skipped:
      return "skipped";
    case where::cancelled:
      return "cancelled";
  }
  return "?";
}

void check_report(const world& w, const keel::run_result<item>& r, violations& v, tally& t);

/// Runs the pipeline of `p` on `sys` and checks every invariant.
void run_one(caf::actor_system& sys, size_t baseline, const params& p, outcome& out, tally& t) {
  auto& v = out.v;
  auto w = std::make_shared<world>(p);
  std::vector<item> inputs(p.items);
  for (uint32_t i = 0; i < p.items; ++i)
    inputs[i] = item{i, 0};
  keel::pipeline<item> pl = keel::pipeline_from(std::move(inputs));
  for (uint32_t i = 0; i < p.stages.size(); ++i) {
    const auto& sp = p.stages[i];
    auto name = std::string{name_of(sp.k)} + std::to_string(i);
    w->stage_names.push_back(name);
    auto opts = keel::stage_options{}
                    .with_workers(sp.workers)
                    .with_ordered(sp.ordered)
                    .with_credit(sp.credit);
    switch (sp.k) {
      case kind::map:
        pl = std::move(pl).map(name, map_fn{w, i}, opts);
        break;
      case kind::filter:
        pl = std::move(pl).filter(name, filter_fn{w, i}, opts);
        break;
      case kind::flat_map:
        pl = std::move(pl).flat_map(name, flat_map_fn{w, i}, opts);
        break;
    }
  }
  keel::run_config cfg;
  cfg.name = "r" + std::to_string(p.seed);
  switch (p.mode) {
    case policy_mode::fail_fast:
      cfg.policy = keel::error_policy::fail_fast();
      break;
    case policy_mode::collect_all:
      cfg.policy = keel::error_policy::collect_all();
      break;
    case policy_mode::hybrid:
      cfg.policy = keel::error_policy::hybrid().on(code::already_exists, error_class::skip);
      break;
  }
  cfg.retry = keel::retry_policy{}
                  .with_max_attempts(p.max_attempts)
                  .with_backoff(std::chrono::microseconds(p.backoff_us),
                                std::chrono::microseconds(4 * p.backoff_us + 1));
  cfg.budget = p.budget_unlimited ? keel::retry_budget::unlimited()
                                  : keel::retry_budget{p.budget_ratio, p.budget_min};
  if (p.cancel == cancel_kind::deadline)
    cfg.deadline = std::chrono::microseconds(p.cancel_us);
  cfg.batch_size = p.batch_size;
  cfg.credit = p.credit;
  cfg.max_errors = p.max_errors;
  cfg.ordered_results = p.ordered_results;
  cfg.latency_sample = p.latency_sample;
  cfg.seed = p.seed | 1;
  cfg.on_dead_letter = [w](const keel::dead_item&) { w->dead_letter_calls.fetch_add(1); };
  if (p.progress) {
    cfg.progress_every = 1ms;
    cfg.on_progress = [w](const keel::run_progress& pr) {
      w->progress_calls.fetch_add(1);
      if (pr.from_source > w->n || pr.failed > pr.ended
          || pr.name != "r" + std::to_string(w->p.seed))
        w->progress_wrong.fetch_add(1);
    };
  }

  {
    auto h = std::move(pl).start(sys, std::move(cfg));
    w->set_control(h.control());
    if (p.cancel == cancel_kind::caller) {
      std::this_thread::sleep_for(std::chrono::microseconds(p.cancel_us));
      h.cancel();
    }
    if (!h.wait_for(hang_guard())) {
      v.add(__LINE__, "the run returns")
          << "no end within " << hang_guard().count() << " s; cancelling it";
      h.cancel();
      if (!h.wait_for(hang_guard())) {
        v.add(__LINE__, "the run returns")
            << "no end within " << hang_guard().count() << " s of cancel()";
        out.hung = true;
        return;
      }
    }
    auto r = h.wait();
    {
      std::lock_guard<std::mutex> g{w->ctl_mtx};
      w->ctl.reset();
    }
    check_report(*w, r, v, t);
  }
  // Every actor of the run has terminated...
  if (!eventually([&] { return sys.registry().running() == baseline; }, 10s)) {
    v.add(__LINE__, "no actor of the run is alive afterwards")
        << sys.registry().running() - baseline << " actors still running";
    out.hung = true; // the next runs could not measure their own
  }
  // The stage functions share `w`; they belong to the run's actors, which
  // must let go of them once terminated (checked at the end of the test).
  out.state = w;
}

void check_report(const world& w, const keel::run_result<item>& r, violations& v, tally& t) {
  const auto& p = w.p;
  const auto& c = r.counts;
  const uint64_t n = p.items;
  const bool one_to_one = p.one_to_one();

  // -- counts add up --
  INV(c.lost == 0) << c.lost;
  INV(c.total() == c.ended()) << c.total() << " vs " << c.ended();
  INV(c.from_source + c.not_started == n) << c.from_source << " + " << c.not_started;
  INV(r.outputs.size() == c.succeeded) << r.outputs.size() << " vs " << c.succeeded;
  INV(r.output_ids.size() == r.outputs.size());
  INV(r.output_origins.size() == r.outputs.size());
  INV(r.failures.size() == c.failed) << r.failures.size() << " vs " << c.failed;
  INV(r.dead_letters.size() == c.dead_lettered)
      << r.dead_letters.size() << " vs " << c.dead_lettered;
  INV(r.skipped.size() == c.skipped) << r.skipped.size() << " vs " << c.skipped;
  INV(r.cancelled_items.size() == c.cancelled) << r.cancelled_items.size() << " vs " << c.cancelled;
  INV(w.dead_letter_calls.load() == r.dead_letters.size())
      << w.dead_letter_calls.load() << " on_dead_letter calls";
  INV(w.id_mismatch.load() == 0) << w.id_mismatch.load();
  INV(w.progress_wrong.load() == 0)
      << w.progress_wrong.load() << " of " << w.progress_calls.load() << " progress reports";
  INV(w.attempt_mismatch.load() == 0)
      << w.attempt_mismatch.load() << " calls, e.g. " << (w.notes.empty() ? "" : w.notes.front());
  INV(w.double_end.load() == 0) << w.double_end.load() << " items passed a stage twice";
  INV(r.stages.size() == p.stages.size()) << r.stages.size();
  if (one_to_one) {
    INV(c.created == 0) << c.created;
    INV(c.consumed == 0) << c.consumed;
    INV(c.filtered == w.filter_drops.load()) << c.filtered << " vs " << w.filter_drops.load();
  } else {
    INV(c.created == w.fm_created.load()) << c.created << " vs " << w.fm_created.load();
    INV(c.consumed == w.fm_consumed.load()) << c.consumed << " vs " << w.fm_consumed.load();
    INV(c.filtered == w.filter_drops.load() + w.fm_empty.load())
        << c.filtered << " vs " << w.filter_drops.load() << " + " << w.fm_empty.load();
  }

  auto stage_index = [&](const std::string& name) -> int {
    for (size_t i = 0; i < w.stage_names.size(); ++i)
      if (w.stage_names[i] == name)
        return static_cast<int>(i);
    return -1;
  };
  auto calls = [&](uint64_t id, int s) {
    return w.calls[w.at(id, static_cast<uint32_t>(s))].load();
  };
  auto passed = [&](uint64_t id, int s) {
    return w.passed[w.at(id, static_cast<uint32_t>(s))].load() != 0;
  };
  auto dropped = [&](uint64_t id, int s) {
    return w.dropped[w.at(id, static_cast<uint32_t>(s))].load() != 0;
  };
  const int S = static_cast<int>(p.stages.size());
  constexpr uint64_t derived_bit = uint64_t{1} << 63;

  // -- where every item ended --
  std::vector<uint8_t> seen(n, 0);
  std::vector<std::pair<uint64_t, where>> derived; // flat_map children
  auto note = [&](uint64_t id, where at) {
    if (id >= derived_bit) {
      INV(!one_to_one) << "item " << id << " (" << name_of(at) << ") has a derived id";
      // Top bit, the making stage's number (1 = first), a run-wide counter.
      INV((id & ((uint64_t{1} << 56) - 1)) < c.created)
          << "item " << id << " (" << name_of(at) << "): counter past " << c.created;
      const auto maker = static_cast<int>((id >> 56) & 0x7F) - 1;
      INV(maker >= 0 && maker < S && p.stages[static_cast<size_t>(maker)].k == kind::flat_map)
          << "item " << id << " (" << name_of(at) << ") made by stage " << maker;
      derived.emplace_back(id, at);
      return;
    }
    INV(id < c.from_source) << "item " << id << " (" << name_of(at) << ") was never read ("
                            << c.from_source << " read)";
    if (id < n)
      ++seen[id];
  };
  // Stages before `s` were passed, stages after it were never called.
  auto path_ok = [&](uint64_t id, int s, bool passed_s, const char* what) {
    if (id >= n)
      return;
    for (int k = 0; k < S; ++k) {
      if (k < s)
        INV(passed(id, k)) << what << " " << id << " at stage " << s << ": stage " << k
                           << " not passed";
      if (k > s)
        INV(calls(id, k) == 0) << what << " " << id << " at stage " << s << ": stage " << k
                               << " called " << calls(id, k) << " times";
    }
    if (s >= 0 && s < S && passed_s)
      INV(passed(id, s)) << what << " " << id << ": stage " << s << " not passed";
  };

  uint64_t map_stages = 0;
  for (const auto& sp : p.stages)
    map_stages += sp.k == kind::map ? 1 : 0;
  for (size_t i = 0; i < r.outputs.size(); ++i) {
    const auto id = r.output_ids[i];
    note(id, where::output);
    if (!one_to_one) {
      INV(r.output_origins[i] < c.from_source) << "output " << id;
      continue;
    }
    INV(r.output_origins[i] == id) << "output " << id << " origin " << r.output_origins[i];
    INV(r.outputs[i].id == id) << "output " << id << " carries " << r.outputs[i].id;
    INV(r.outputs[i].hops == map_stages) << "output " << id << " hops " << r.outputs[i].hops;
    path_ok(id, S, false, "output");
  }

  // Errors carry a stage_info naming the stage, the item and the attempt.
  auto check_error = [&](const keel::error& err, uint64_t id, const std::string& stage,
                         std::optional<uint32_t> attempts, const char* what) {
    INV(static_cast<bool>(err)) << what << " " << id << " has no error";
    auto info = keel::as<keel::stage_info>(err);
    INV(info.has_value()) << what << " " << id << ": " << keel::to_string(err);
    if (info) {
      INV(info->stage == stage) << what << " " << id << ": " << info->stage << " vs " << stage;
      INV(info->item_id == std::to_string(id)) << what << " " << id << ": " << info->item_id;
      if (attempts)
        INV(info->attempt == *attempts) << what << " " << id << ": " << info->attempt;
    }
  };
  // The error of an item that ended at stage `s` after `attempts` calls is
  // the fault of the last call; the earlier ones were retryable.
  auto check_fault = [&](uint64_t id, int s, uint32_t attempts, const keel::error& err,
                         error_class expected_list, const char* what) {
    if (id >= n || s < 0)
      return;
    INV(calls(id, s) == attempts) << what << " " << id << " at stage " << s << ": " << calls(id, s)
                                  << " calls, " << attempts << " attempts";
    auto f = fault_of(p, id, static_cast<uint32_t>(s), attempts);
    INV(f != fault::none) << what << " " << id << " at stage " << s << " attempt " << attempts
                          << " had no fault: " << keel::to_string(err);
    INV(err.code() == code_of(f)) << what << " " << id << ": " << keel::to_string(err)
                                  << ", the plan says " << keel::to_string(code_of(f));
    auto cls = class_of(p.mode, code_of(f));
    bool list_ok = cls == expected_list
                   || (expected_list == error_class::item && cls == error_class::critical);
    INV(list_ok) << what << " " << id << ": class " << keel::to_string(cls);
    for (uint32_t k = 1; k < attempts; ++k)
      INV(retryable(fault_of(p, id, static_cast<uint32_t>(s), k)))
          << what << " " << id << " retried after a non-retryable fault at attempt " << k;
    if (retryable(f) && attempts < p.max_attempts && !r.cancelled && !r.failed_fast) {
      INV(!p.budget_unlimited) << what << " " << id << " not retried (attempt " << attempts
                               << "): " << keel::to_string(err);
    }
  };

  bool has_critical = false;
  for (const auto& f : r.failures) {
    note(f.item, where::failure);
    const int s = stage_index(f.stage);
    INV(s >= 0) << "failure " << f.item << " at unknown stage \"" << f.stage << "\"";
    INV(f.attempts >= 1 && f.attempts <= p.max_attempts)
        << "failure " << f.item << " after " << f.attempts << " attempts";
    check_error(f.error, f.item, f.stage, f.attempts, "failure");
    if (class_of(p.mode, f.error.code()) == error_class::critical)
      has_critical = true;
    if (f.item < derived_bit) {
      INV(f.origin == f.item) << "failure " << f.item << " origin " << f.origin;
      if (one_to_one) {
        path_ok(f.item, s, false, "failure");
        if (s >= 0)
          INV(!passed(f.item, s)) << "failure " << f.item << " passed its stage";
      }
      check_fault(f.item, s, f.attempts, f.error, error_class::item, "failure");
    }
  }
  for (const auto& d : r.dead_letters) {
    note(d.item, where::dead);
    const int s = stage_index(d.stage);
    INV(s >= 0) << "dead letter " << d.item << " at unknown stage \"" << d.stage << "\"";
    INV(d.attempts >= 1 && d.attempts <= p.max_attempts)
        << "dead letter " << d.item << " after " << d.attempts << " attempts";
    check_error(d.error, d.item, d.stage, d.attempts, "dead letter");
    INV(p.mode == policy_mode::hybrid && d.error.code() == code::panic)
        << "dead letter " << d.item << ": " << keel::to_string(d.error);
    auto x = std::any_cast<item>(&d.value);
    INV(x != nullptr) << "dead letter " << d.item << " has no value";
    if (d.item < derived_bit) {
      if (x)
        INV(x->id == d.item) << "dead letter " << d.item << " value " << x->id;
      if (one_to_one) {
        path_ok(d.item, s, false, "dead letter");
        if (s >= 0)
          INV(!passed(d.item, s)) << "dead letter " << d.item << " passed its stage";
      }
      check_fault(d.item, s, d.attempts, d.error, error_class::poison, "dead letter");
    }
  }
  for (const auto& k : r.skipped) {
    note(k.item, where::skipped);
    const int s = stage_index(k.stage);
    INV(s >= 0) << "skipped " << k.item << " at unknown stage \"" << k.stage << "\"";
    check_error(k.reason, k.item, k.stage, std::nullopt, "skipped");
    INV(p.mode == policy_mode::hybrid && k.reason.code() == code::already_exists)
        << "skipped " << k.item << ": " << keel::to_string(k.reason);
    if (k.item < n && s >= 0) {
      if (one_to_one) {
        path_ok(k.item, s, false, "skipped");
        INV(!passed(k.item, s)) << "skipped " << k.item << " passed its stage";
      }
      auto a = calls(k.item, s);
      INV(a >= 1 && a <= p.max_attempts) << "skipped " << k.item << " after " << a << " calls";
      check_fault(k.item, s, a, k.reason, error_class::skip, "skipped");
    }
  }
  for (const auto& k : r.cancelled_items) {
    note(k.item, where::cancelled);
    const bool at_source = k.stage == "source";
    const int s = at_source ? -1 : stage_index(k.stage);
    INV(at_source || s >= 0) << "cancelled " << k.item << " at unknown stage \"" << k.stage << "\"";
    INV(k.reason.code() == code::cancelled || k.reason.code() == code::deadline_exceeded)
        << "cancelled " << k.item << ": " << keel::to_string(k.reason);
    if (p.cancel != cancel_kind::deadline)
      INV(k.reason.code() == code::cancelled)
          << "cancelled " << k.item << ": " << keel::to_string(k.reason);
    if (one_to_one && (at_source || s >= 0))
      path_ok(k.item, at_source ? -1 : s, false, "cancelled");
  }

  // Every input ended exactly once: in one list, or dropped by a filter, or
  // never read.
  uint64_t silent = 0; // read, in no list
  for (uint64_t id = 0; id < n; ++id) {
    if (id >= c.from_source) {
      INV(seen[id] == 0) << "item " << id << " was never read but ended " << int{seen[id]}
                         << " times";
      for (int s = 0; s < S; ++s)
        INV(calls(id, s) == 0) << "item " << id << " was never read but stage " << s << " saw it";
      continue;
    }
    if (seen[id] > 1)
      INV(seen[id] <= 1) << "item " << id << " ended " << int{seen[id]} << " times";
    if (seen[id] == 0)
      ++silent;
    if (!one_to_one)
      continue;
    int drop_stage = -1;
    for (int s = 0; s < S; ++s)
      if (dropped(id, s)) {
        INV(drop_stage < 0) << "item " << id << " dropped by stages " << drop_stage << " and " << s;
        drop_stage = s;
      }
    if (drop_stage >= 0) {
      INV(seen[id] == 0) << "item " << id << " was dropped by stage " << drop_stage
                         << " and also ended in a list";
      INV(drops(p, id, static_cast<uint32_t>(drop_stage)))
          << "item " << id << " dropped against the predicate";
      path_ok(id, drop_stage, false, "filtered");
    } else {
      INV(seen[id] == 1) << "item " << id << " (read) is in no list and was not filtered";
    }
  }
  if (one_to_one)
    INV(silent == c.filtered) << silent << " read items in no list, " << c.filtered << " filtered";
  std::sort(derived.begin(), derived.end());
  for (size_t i = 1; i < derived.size(); ++i)
    INV(derived[i - 1].first != derived[i].first)
        << "derived item " << derived[i].first << " ended twice (" << name_of(derived[i - 1].second)
        << ", " << name_of(derived[i].second) << ")";

  // -- the run error --
  const bool cancel_requested = p.cancel != cancel_kind::none;
  INV(static_cast<bool>(r.error) == (r.failed_fast || r.cancelled || !r.failures.empty()))
      << "error " << keel::to_string(r.error) << ", failed_fast " << r.failed_fast << ", cancelled "
      << r.cancelled << ", " << r.failures.size() << " failures";
  INV(!(r.failed_fast && r.cancelled));
  if (r.failed_fast) {
    INV(has_critical) << "failed fast without a critical failure: " << keel::to_string(r.error);
    bool found = false;
    for (const auto& f : r.failures)
      if (f.error == r.error)
        found = true;
    INV(found) << "the run error is not a critical item error: " << keel::to_string(r.error);
    INV(class_of(p.mode, r.error.code()) == error_class::critical)
        << "run error " << keel::to_string(r.error);
  }
  if (has_critical)
    INV(r.failed_fast || r.cancelled) << "a critical failure did not end the run";
  if (r.cancelled) {
    INV(cancel_requested) << "cancelled, nobody cancelled: " << keel::to_string(r.error);
    INV(r.error.code()
        == (p.cancel == cancel_kind::deadline ? code::deadline_exceeded : code::cancelled))
        << keel::to_string(r.error);
  }
  if (!r.cancelled && !r.failed_fast) {
    INV(r.cancelled_items.empty())
        << r.cancelled_items.size() << " items cancelled, e.g. " << r.cancelled_items.front().item
        << " at " << r.cancelled_items.front().stage << ": "
        << keel::to_string(r.cancelled_items.front().reason);
    INV(c.not_started == 0) << c.not_started;
    INV(c.from_source == n) << c.from_source;
  }

  // -- retries and restarts --
  uint64_t retries = 0, denied = 0, restarts = 0, errors_seen = 0, panics_seen = 0;
  for (const auto& st : r.stages) {
    retries += st.retries;
    denied += st.retries_denied;
    restarts += st.restarts;
    for (const auto& [name, count] : st.errors_by_code) {
      errors_seen += count;
      if (name == keel::to_string(code::panic))
        panics_seen += count;
    }
  }
  INV(restarts == w.throws.load()) << restarts << " restarts, " << w.throws.load() << " exceptions";
  if (w.throws.load() > 0)
    INV(restarts >= 1);
  INV(errors_seen == w.faults.load())
      << errors_seen << " errors counted, " << w.faults.load() << " injected";
  INV(panics_seen == w.throws.load())
      << panics_seen << " panics counted, " << w.throws.load() << " thrown";
  if (p.max_attempts <= 1)
    INV(retries == 0) << retries;
  if (!p.budget_unlimited)
    INV(static_cast<double>(retries) <= static_cast<double>(p.budget_min)
                                            + p.budget_ratio * static_cast<double>(c.from_source)
                                            + 1)
        << retries << " retries";
  else
    INV(denied == 0) << denied;
  for (uint64_t id = 0; id < n; ++id)
    for (int s = 0; s < S; ++s)
      INV(calls(id, s) <= p.max_attempts)
          << "item " << id << " called " << calls(id, s) << " times at stage " << s;
  if (one_to_one) {
    uint64_t repeat_calls = 0;
    for (uint64_t id = 0; id < n; ++id)
      for (int s = 0; s < S; ++s)
        repeat_calls += calls(id, s) > 1 ? calls(id, s) - 1 : 0;
    INV(repeat_calls <= retries) << repeat_calls << " repeated calls, " << retries << " retries";
    if (!r.cancelled && !r.failed_fast)
      INV(repeat_calls == retries) << repeat_calls << " repeated calls, " << retries << " retries";
  }

  // -- order --
  if (p.ordered_results) {
    for (size_t i = 1; i < r.output_ids.size(); ++i) {
      INV(r.output_origins[i - 1] <= r.output_origins[i]) << "position " << i;
      if (r.output_origins[i - 1] == r.output_origins[i])
        INV(r.output_ids[i - 1] < r.output_ids[i]) << "position " << i;
    }
  } else if (one_to_one && retries == 0 && !r.cancelled && !r.failed_fast
             && std::all_of(p.stages.begin(), p.stages.end(),
                            [](const stage_param& s) { return s.workers == 1 || s.ordered; })) {
    // Without retries, ordered stages keep the input order end to end.
    for (size_t i = 1; i < r.output_ids.size(); ++i)
      INV(r.output_ids[i - 1] < r.output_ids[i])
          << "position " << i << ": " << r.output_ids[i - 1] << " before " << r.output_ids[i];
  }

  t.runs++;
  t.inputs += n;
  t.succeeded += c.succeeded;
  t.failed += c.failed;
  t.dead += c.dead_lettered;
  t.skipped += c.skipped;
  t.filtered += c.filtered;
  t.cancelled_items += c.cancelled;
  t.not_started += c.not_started;
  t.cancelled_runs += r.cancelled ? 1 : 0;
  t.failed_fast_runs += r.failed_fast ? 1 : 0;
  t.throws += w.throws.load();
  t.restarts += restarts;
  t.retries += retries;
  t.flat_map_runs += one_to_one ? 0 : 1;
}

/// Runs the sub-seeds (or the one of KEEL_TEST_SUBSEED) and reports the
/// failing ones with their parameters.
template <class MakeParams>
void run_seeds(const char* test, size_t runs, MakeParams make) {
  const auto seed = test_seed();
  std::cout << "seed: " << seed << " (KEEL_TEST_SEED=" << seed << " replays)\n";
  std::vector<uint64_t> subseeds;
  if (auto one = test_subseed()) {
    // KEEL_TEST_REPEAT=<n>: run it n times (timing-dependent failures).
    const char* repeat = std::getenv("KEEL_TEST_REPEAT");
    subseeds.assign(repeat ? std::max<size_t>(1, std::strtoull(repeat, nullptr, 10)) : 1, *one);
  } else {
    for (size_t i = 0; i < runs; ++i)
      subseeds.push_back(mix(mix(seed) + i)); // disjoint for nearby base seeds
  }
  config cfg;
  caf::actor_system sys{cfg};
  const auto baseline = sys.registry().running();
  tally t;
  size_t failing = 0;
  // Runs whose state has not been released yet. A terminated actor may stay
  // in memory a little longer (a timer addressed to it holds it, e.g. the
  // stage supervisor's shutdown timeout), so this is checked at the end,
  // with a bound, not after every run.
  std::vector<std::pair<uint64_t, std::weak_ptr<world>>> unreleased;
  const auto t0 = std::chrono::steady_clock::now();
  for (auto sub : subseeds) {
    auto p = make(sub);
    outcome out;
    run_one(sys, baseline, p, out, t);
    if (!out.state.expired())
      unreleased.emplace_back(sub, std::move(out.state));
    if (unreleased.size() > 256)
      std::erase_if(unreleased, [](const auto& x) { return x.second.expired(); });
    if (!out.v.empty()) {
      ADD_FAILURE() << test << ", base seed " << seed << ", " << p.describe()
                    << "\n  replay: KEEL_TEST_SUBSEED=" << sub << "\n"
                    << out.v.text();
      std::fflush(stdout); // seen at once, even if a later run hangs
      ++failing;
    }
    if (out.hung) {
      std::cerr << "the actor system is stuck; giving up" << std::endl;
      std::fflush(nullptr);
      std::abort(); // destroying the actor system would wait forever
    }
    if (failing >= 5) {
      std::cout << "stopping after 5 failing runs\n";
      break;
    }
  }
  // Every run's actors have let go of its state (no cycle of actor handles
  // keeps them in memory).
  const bool released = eventually(
      [&] {
        return std::all_of(unreleased.begin(), unreleased.end(),
                           [](const auto& x) { return x.second.expired(); });
      },
      30s);
  if (!released) {
    std::erase_if(unreleased, [](const auto& x) { return x.second.expired(); });
    std::ostringstream os;
    for (size_t i = 0; i < std::min<size_t>(5, unreleased.size()); ++i)
      os << "  " << make(unreleased[i].first).describe()
         << "\n    replay: KEEL_TEST_SUBSEED=" << unreleased[i].first << "\n";
    ADD_FAILURE() << test << ", base seed " << seed << ": the state of " << unreleased.size()
                  << " runs (stage functions, items, records) was still referenced 30 s after "
                     "they ended: their actors stay in memory. For example:\n"
                  << os.str();
  }
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
          .count();
  t.print(std::cout);
  std::cout << "in " << ms << " ms\n";
}

// Random item failures, exceptions, restarts and cancellation at a random
// moment, over 5000 small runs (divided by KEEL_TEST_SCALE: 200 under TSan).
// A run takes about a millisecond (tens under TSan), so the whole takes
// seconds even under a sanitizer.
TEST(PipelineConcurrency, EveryInputEndsExactlyOnceUnderRandomFaultsAndCancellation) {
  run_seeds("EveryInputEndsExactlyOnce", std::max<size_t>(1, 5000 / test_scale()),
            [](uint64_t sub) { return small_params(sub); });
}

// Larger runs (50 x 20k items; 20 x 800 under TSan's scale), each cancelled
// at a random moment: they return (promptly: the hang guard is the only
// timing check) with the same accounting.
TEST(PipelineConcurrency, CancellationAtRandomMomentsOfLargeRuns) {
  const auto items = static_cast<uint32_t>(std::max<size_t>(100, 20'000 / test_scale()));
  run_seeds("CancellationAtRandomMoments", std::max<size_t>(20, 50 / test_scale()),
            [items](uint64_t sub) { return stress_params(sub, items); });
}

} // namespace
