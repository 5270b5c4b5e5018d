// A pipeline stage that throws, restarted by its supervisor, with nothing lost.
//
//   10,000 item ids -> enrich (map, 2 workers, a stateful functor) -> results
//
// `enricher` keeps state in its members: how many items this instance has
// enriched and a cache of customer segments. It throws std::runtime_error
//  - on about 1% of the items, on their first attempt only (a transient
//    failure: the item is retried and succeeds), and
//  - on 5 poison items, on every attempt (the item is quarantined into the
//    run's dead letters after `max_attempts`).
//
// Every throw crashes the worker: the run's stage supervisor restarts it in
// place with a fresh copy of the functor (its members start over, as an Erlang
// process's state does) and the worker resumes its batch after the item that
// crashed it. The supervisor's events are recorded (run_config::events).
//
// At the end the example checks what it promised: every input is accounted
// for exactly once (outputs + dead letters == inputs, nothing lost), the
// restarts equal the throws, the transient items are among the outputs, the
// poison items are exactly the dead letters (each after max_attempts), and no
// functor instance ever ran again after it threw. Exit code 1 when a check
// fails (it also runs as the CTest smoke test example_pipeline_restart).

#include "keel/error.hpp"
#include "keel/pipeline.hpp"
#include "keel/supervision.hpp"

#include <caf/all.hpp>

#include <algorithm>
#include <any>
#include <atomic>
#include <cstdint>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <numeric>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

using namespace std::chrono_literals;

namespace {

int failures = 0;

void check(bool ok, const std::string& what) {
  std::cout << (ok ? "  ok   " : "  FAIL ") << what << "\n";
  if (!ok)
    ++failures;
}

struct config : caf::actor_system_config {
  config() {
    keel::add_error_types(*this);
    set("scheduler.max-threads", 2);
  }
};

constexpr int item_count = 10000;
constexpr uint32_t max_attempts = 3;
const std::set<int> poison_items = {1234, 2718, 3141, 6022, 8128};

/// About 1% of the items fail once (a flaky lookup), then succeed.
bool transient(int x) {
  return x % 97 == 41 && !poison_items.contains(x);
}

/// What the enrich stage makes of an item.
struct enriched {
  int item = 0;
  uint32_t attempt = 0;  ///< the attempt that succeeded
  uint64_t instance = 0; ///< which functor instance enriched it
  std::string segment;
};

/// What the functor instances report about themselves, shared by every copy.
struct observations {
  /// A functor instance's first item (`fresh`) or its throw (`crash`).
  struct note {
    enum kind_t { fresh, crash } kind;
    uint32_t worker;
    uint64_t instance;
    uint64_t handled;  ///< items this instance had enriched
    size_t cache_size; ///< entries in its cache
    int item;
    uint32_t attempt;
  };

  std::atomic<uint64_t> instances{0};
  std::atomic<uint64_t> throws{0};
  /// Calls that reached an instance after it had thrown: its state would then
  /// have survived the crash. Must stay 0.
  std::atomic<uint64_t> reused_after_crash{0};

  std::mutex mtx;
  std::vector<note> notes; ///< per worker in call order

  void add(note n) {
    std::lock_guard<std::mutex> guard{mtx};
    notes.push_back(n);
  }
};

/// The stateful stage function. The runtime copies it for every worker and
/// again for every restart, so its members belong to one incarnation.
class enricher {
public:
  explicit enricher(std::shared_ptr<observations> obs) : obs_(std::move(obs)) {}

  enriched operator()(const int& x, keel::item_context& ctx) {
    if (crashed_)
      ++obs_->reused_after_crash;
    if (!instance_) {
      instance_ = ++obs_->instances;
      obs_->add({observations::note::fresh, ctx.worker(), *instance_, handled_, cache_.size(), x,
                 ctx.attempt()});
    }
    bool poison = poison_items.contains(x);
    if (poison || (transient(x) && ctx.attempt() == 1)) {
      crashed_ = true;
      ++obs_->throws;
      obs_->add({observations::note::crash, ctx.worker(), *instance_, handled_, cache_.size(), x,
                 ctx.attempt()});
      throw std::runtime_error(poison ? "segment service rejects item " + std::to_string(x)
                                      : "segment lookup timed out for item " + std::to_string(x));
    }
    ++handled_;
    auto& segment = cache_[x % 500];
    if (segment.empty())
      segment = "segment-" + std::to_string(x % 500);
    return enriched{x, ctx.attempt(), *instance_, segment};
  }

private:
  std::shared_ptr<observations> obs_;
  std::optional<uint64_t> instance_;
  uint64_t handled_ = 0;
  std::unordered_map<int, std::string> cache_;
  bool crashed_ = false;
};

std::string describe(const observations::note& n) {
  return "instance #" + std::to_string(n.instance) + " (worker " + std::to_string(n.worker) + ", "
         + std::to_string(n.handled) + " items enriched, " + std::to_string(n.cache_size)
         + " cache entries)";
}

} // namespace

int main() {
  config cfg;
  caf::actor_system sys{cfg};

  std::vector<int> items(item_count);
  std::iota(items.begin(), items.end(), 0);
  std::set<int> transient_items;
  for (int x : items)
    if (transient(x))
      transient_items.insert(x);

  auto obs = std::make_shared<observations>();
  auto events = std::make_shared<keel::event_recorder>();

  keel::run_config rc;
  rc.name = "enrich-orders";
  // hybrid: a thrown exception is a `panic` error; panics are retried (the
  // worker is restarted first) and, when every attempt threw, the item is
  // poison and goes to the dead letters instead of failing the run.
  rc.policy = keel::error_policy::hybrid();
  rc.retry = keel::retry_policy{}.with_max_attempts(max_attempts).with_backoff(1ms, 10ms);
  rc.events = events;
  rc.seed = 42;

  std::cout << "== pipeline_restart: a throwing stage restarted by its supervisor ==\n"
            << "enriching " << item_count << " items on 2 workers; " << transient_items.size()
            << " items fail on their first attempt, " << poison_items.size()
            << " items (poison) fail on every attempt\n\n";
  auto r = keel::pipeline_from(items)
               .map("enrich", enricher{obs}, keel::stage_options{}.with_workers(2))
               .run(sys, rc);
  std::cout << r.summary() << "\n";

  // -- what the supervisor did -----------------------------------------------------
  auto evs = events->events();
  std::map<std::string, size_t> by_kind;
  for (const auto& e : evs)
    ++by_kind[std::string{keel::to_string(e.kind)}];
  std::cout << "supervision events:";
  for (const auto& [kind, n] : by_kind)
    std::cout << " " << kind << " " << n << ";";
  std::cout << "\nthe first restart, as the supervisor reported it:\n";
  for (auto it = std::find_if(evs.begin(), evs.end(),
                              [](const auto& e) { return e.kind == keel::event_kind::failed; });
       it != evs.end(); ++it) {
    std::cout << "  " << keel::to_string(*it) << "\n";
    if (it->kind == keel::event_kind::started)
      break;
  }

  // -- the functor's state across restarts -------------------------------------------
  std::vector<observations::note> notes;
  {
    std::lock_guard<std::mutex> guard{obs->mtx};
    notes = obs->notes;
  }
  // After a crash, the next note of the same worker must come from a new
  // instance that starts from nothing.
  size_t crashes = 0, followed = 0, fresh_after = 0, shown = 0;
  std::cout << "\nmember state before and after a restart (first 3 crashes):\n";
  for (size_t i = 0; i < notes.size(); ++i) {
    if (notes[i].kind != observations::note::crash)
      continue;
    ++crashes;
    auto next = std::find_if(notes.begin() + static_cast<std::ptrdiff_t>(i) + 1, notes.end(),
                             [&](const auto& n) { return n.worker == notes[i].worker; });
    if (next == notes.end())
      continue;
    ++followed;
    bool fresh = next->kind == observations::note::fresh && next->instance != notes[i].instance
                 && next->handled == 0 && next->cache_size == 0;
    if (fresh)
      ++fresh_after;
    if (shown++ < 3)
      std::cout << "  item " << notes[i].item << " (attempt " << notes[i].attempt << ") threw in "
                << describe(notes[i]) << "\n    -> the next item, " << next->item << " (attempt "
                << next->attempt << "), ran in " << describe(*next) << "\n";
  }

  // -- dead letters --------------------------------------------------------------------
  std::cout << "\ndead letters:\n";
  std::set<int> dead_values;
  bool dead_ok = true;
  for (const auto& d : r.dead_letters) {
    const int* v = std::any_cast<int>(&d.value);
    if (v)
      dead_values.insert(*v);
    dead_ok = dead_ok && v && d.stage == "enrich" && d.attempts == max_attempts
              && keel::is_panic(d.error);
    std::cout << "  item " << (v ? std::to_string(*v) : "?") << " at " << d.stage << " after "
              << d.attempts << " attempts: " << keel::to_string(d.error) << "\n";
  }

  // -- checks --------------------------------------------------------------------------
  std::cout << "\nchecks:\n";
  const auto& enrich = r.stages.at(0);
  std::vector<int> seen(item_count, 0);
  for (const auto& e : r.outputs)
    if (e.item >= 0 && e.item < item_count)
      ++seen[static_cast<size_t>(e.item)];
  for (int x : dead_values)
    ++seen[static_cast<size_t>(x)];
  bool once = std::all_of(seen.begin(), seen.end(), [](int n) { return n == 1; });
  std::set<int> transient_out;
  for (const auto& e : r.outputs)
    if (transient_items.contains(e.item) && e.attempt == 2)
      transient_out.insert(e.item);

  check(!r.error, "the run succeeded (dead letters are not run errors)");
  check(r.outputs.size() + r.dead_letters.size() == items.size() && once,
        std::to_string(r.outputs.size()) + " outputs + " + std::to_string(r.dead_letters.size())
            + " dead letters == " + std::to_string(items.size())
            + " inputs, each accounted for exactly once");
  check(r.counts.total() == r.counts.ended() && r.counts.lost == 0 && r.counts.failed == 0,
        "counts add up: " + std::to_string(r.counts.total()) + " in, "
            + std::to_string(r.counts.ended()) + " ended, 0 lost, 0 failed");
  check(enrich.restarts == obs->throws.load(),
        "stages[enrich].restarts (" + std::to_string(enrich.restarts) + ") == throws observed ("
            + std::to_string(obs->throws.load()) + ")");
  check(obs->throws.load() == transient_items.size() + poison_items.size() * max_attempts,
        "throws == " + std::to_string(transient_items.size()) + " transient + "
            + std::to_string(poison_items.size()) + " poison x " + std::to_string(max_attempts)
            + " attempts");
  check(events->count(keel::event_kind::restarted) == enrich.restarts,
        "the supervisor reported every restart as an event");
  check(transient_out == transient_items,
        "all " + std::to_string(transient_items.size())
            + " transient items are among the outputs, on their second attempt");
  check(dead_values == poison_items && r.dead_letters.size() == poison_items.size() && dead_ok,
        "the dead letters are exactly the 5 poison items, each a panic after "
            + std::to_string(max_attempts) + " attempts at enrich");
  check(enrich.retries == transient_items.size() + poison_items.size() * (max_attempts - 1)
            && enrich.retries_denied == 0,
        "retries: one per transient item, " + std::to_string(max_attempts - 1)
            + " per poison item, none refused by the budget");
  check(obs->reused_after_crash.load() == 0 && followed > 0 && fresh_after == followed,
        "member state was reset on restart: after " + std::to_string(followed) + " of the "
            + std::to_string(crashes)
            + " crashes (the others were the worker's last work), the worker's next item ran in a "
              "new instance with "
              "0 items and an empty cache; no instance ran again after it threw");
  check(obs->instances.load() <= enrich.workers + enrich.restarts,
        std::to_string(obs->instances.load()) + " functor instances did work, at most 2 workers + "
            + std::to_string(enrich.restarts) + " restarts");
  std::cout << (failures == 0 ? "all checks passed\n" : "some checks FAILED\n");
  return failures == 0 ? 0 : 1;
}
