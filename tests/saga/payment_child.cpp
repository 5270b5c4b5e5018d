// The crash test's child process: runs payment sagas against a journal and a
// ledger in one directory, with seeded random latency and faults, until they
// all end (or until the test kills it with SIGKILL).
//
// Usage: keel_saga_payment_child <dir> <first> <count> <seed>
//
// Starts the sagas order-<first> .. order-<first + count - 1> that the journal
// does not know yet; the coordinator resumes the unfinished ones of earlier
// (killed) runs by itself. Prints "ready <resumed>" once the coordinator runs
// (the test kills it some milliseconds after that), then "done <counts>" when
// every saga it began or resumed has ended. Exit status: 0 when they all
// ended, 2 when one did not, 1 on a setup error.
//
// The coordinator's owner is the same in every run, so a restarted child
// takes the leases of the killed one back at once.

#include "payment/faults.hpp"
#include "payment/flow.hpp"
#include "payment/ledger.hpp"

#include "keel/error.hpp"
#include "keel/saga/coordinator.hpp"
#include "keel/store/sqlite_journal.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/send.hpp>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <set>
#include <string>

namespace {

struct config : caf::actor_system_config {
  config() {
    keel::add_error_types(*this);
    set("scheduler.max-threads", 4);
    set("logger.file-verbosity", caf::atom("quiet"));
    set("logger.console-verbosity", caf::atom("quiet"));
  }
};

/// The faults of every run (the same seed in every run: a resumed saga meets
/// the faults it met before the kill).
std::shared_ptr<payment::faults> make_faults(uint64_t seed) {
  using namespace std::chrono_literals;
  using payment::fault_kind;
  auto f = std::make_shared<payment::faults>(seed);
  // Every action is a little slow, so kills land in the middle of sagas.
  f->add({.step = "*", .kind = fault_kind::none, .latency_min = 0ms, .latency_max = 3ms});
  f->add({.step = "*", .compensator = true, .kind = fault_kind::none, .latency_max = 2ms});
  // Out of stock: rolled back after charging.
  f->add({.step = "allocate",
          .share = 0.2,
          .code = keel::code::failed_precondition,
          .message = "out of stock"});
  // A lost reply: the charge happened, the retry must not charge again.
  f->add({.step = "charge", .share = 0.15, .times = 1, .kind = fault_kind::fail_after_effect});
  // The shipping client throws once (a panic, retried).
  f->add({.step = "ship", .share = 0.05, .times = 1, .kind = fault_kind::throw_exception});
  // The notification service is down for good: everything is rolled back.
  f->add({.step = "notify", .share = 0.05, .message = "mail server down"});
  // Refunds fail twice, then work (the compensator is retried).
  f->add({.step = "charge",
          .compensator = true,
          .share = 0.3,
          .times = 2,
          .message = "payment provider busy"});
  // A release that never works: needs_intervention.
  f->add({.step = "allocate",
          .compensator = true,
          .share = 0.05,
          .code = keel::code::internal,
          .message = "warehouse API rejects the release"});
  return f;
}

payment::order make_order(int i) {
  payment::order o;
  o.id = "order-" + std::to_string(i);
  // Every 17th order is invalid: rolled back at validate, nothing to undo.
  o.amount = i % 17 == 16 ? 0 : 100 + i;
  o.items = {{"sku-" + std::to_string(i % 5), 1 + i % 3}, {"sku-gift", 1}};
  return o;
}

int run(const std::string& dir, int first, int count, uint64_t seed) {
  keel::store::sqlite_options jopts;
  jopts.level = keel::store::durability::normal;
  auto journal = keel::store::open_sqlite_journal(dir + "/journal.db", jopts);
  if (!journal) {
    std::cerr << "payment_child: " << journal.error() << '\n';
    return 1;
  }
  auto ledger = payment::ledger::open(dir + "/ledger.db");
  if (!ledger) {
    std::cerr << "payment_child: " << ledger.error() << '\n';
    return 1;
  }
  config cfg;
  caf::actor_system sys{cfg};
  payment::flow_env env;
  env.ledger = std::move(*ledger);
  env.faults = make_faults(seed);
  env.delayer = payment::spawn_delayer(sys);
  env.step_timeout = std::chrono::seconds(10);
  keel::saga::coordinator_config ccfg;
  ccfg.owner = "payment-crash-child";
  ccfg.seed = seed;
  auto coord = keel::saga::coordinator::start(sys, *journal, {payment::make_definition(env)}, ccfg);
  if (!coord) {
    std::cerr << "payment_child: " << coord.error() << '\n';
    return 1;
  }
  std::set<std::string> ids{coord->resumed().begin(), coord->resumed().end()};
  std::cout << "ready " << ids.size() << std::endl;
  for (int i = first; i < first + count; ++i) {
    auto o = make_order(i);
    auto known = (*journal)->saga(o.id);
    if (!known) {
      std::cerr << "payment_child: " << known.error() << '\n';
      return 1;
    }
    if (*known) {
      ids.insert(o.id);
      continue;
    }
    if (auto r = coord->begin(payment::kind, o.id, payment::to_data(o));
        !r && !keel::is_already_exists(r.error())) {
      std::cerr << "payment_child: begin " << o.id << ": " << r.error() << '\n';
      return 1;
    }
    ids.insert(o.id);
  }
  std::map<keel::saga_state, int> counts;
  int status = 0;
  for (const auto& id : ids) {
    auto out = coord->wait(id, std::chrono::seconds(60));
    if (!out) {
      std::cerr << "payment_child: wait " << id << ": " << out.error() << '\n';
      status = 2;
      continue;
    }
    ++counts[out->state];
  }
  std::cout << "done";
  for (auto& [s, n] : counts)
    std::cout << ' ' << keel::to_string(s) << '=' << n;
  std::cout << std::endl;
  coord->stop();
  // A timer still pending in a finished runner keeps the steps (and the
  // delayer's handle in them) alive until it fires: stop the delayer now.
  caf::anon_send_exit(env.delayer, caf::exit_reason::user_shutdown);
  return status;
}

} // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::cerr << "usage: " << argv[0] << " <dir> <first> <count> <seed>\n";
    return 1;
  }
  return run(argv[1], std::atoi(argv[2]), std::atoi(argv[3]), std::strtoull(argv[4], nullptr, 10));
}
