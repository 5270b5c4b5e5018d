// The seed's payment flow -- validate, charge, allocate inventory, ship,
// notify -- as a durable keel saga, twice:
//
//  1. Orchestrated: keel::saga::coordinator runs the steps (payment/flow.cpp)
//     for 20 orders, persisting every step in a SQLite journal. Faults are
//     injected per order: two orders are out of stock (rolled back: the
//     charge is refunded), one loses the charge's reply (retried, charged
//     once), one's shipping client throws once (a panic, retried), one's
//     carrier is down (rolled back, and its refund fails twice before it
//     works: the compensator is retried), one is invalid (rolled back at
//     validate, nothing to undo), one's mail server is down (everything is
//     undone, shipment cancelled), and one's refund is rejected for good: that
//     saga ends needs_intervention, with the reason, for an operator.
//  2. Choreographed: the same steps as participant actors on an event bus
//     (keel/bus/event_bus.hpp). None knows the others: the payments actor
//     reacts to "validate.done", inventory to "charge.done", and so on; the
//     choreography coordinator (keel/saga/choreography.hpp) only watches the
//     events, persists them, and asks for compensations in reverse order when
//     a step fails.
//
// Side effects go to a real SQLite "ledger" (payment/ledger.hpp: payments,
// refunds, reservations, shipments, notifications), a database of its own
// next to the journal. Every ledger operation is idempotent by the step's
// idempotency key. At the end the ledger is checked against the journal:
// every charge belongs to a completed order or is refunded exactly once, no
// reservation of an order that did not complete is left, no shipment of a
// rolled-back order is live. Exit status 1 when a check fails (this also runs
// as the CTest smoke test example_payment_saga).
//
// With --crash-resume, the program instead forks a child that starts 20
// slow sagas and kills it with SIGKILL in the middle; then it opens the same
// journal and ledger itself, and the coordinator resumes every unfinished
// saga (forward from the step in flight, or rollback where it was) until all
// have ended; the ledger is then checked the same way.
//
// Usage: payment_saga [work-dir] [--crash-resume] [--seed N]
//   work-dir: where journal.db and ledger.db go (default: a fresh directory
//   under /tmp, removed after a successful run; a given one is kept).

#include "payment/faults.hpp"
#include "payment/flow.hpp"
#include "payment/ledger.hpp"

#include "keel/bus/event_bus.hpp"
#include "keel/error.hpp"
#include "keel/saga/choreography.hpp"
#include "keel/saga/coordinator.hpp"
#include "keel/store/sqlite_journal.hpp"

#include <caf/all.hpp>

#include <boost/json.hpp>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

// -- checks and output ---------------------------------------------------------------

int failed_checks = 0;

void check(bool ok, const std::string& what) {
  std::cout << (ok ? "  ok   " : "  FAIL ") << what << "\n";
  if (!ok)
    ++failed_checks;
}

void heading(std::string_view title) {
  std::cout << "\n== " << title << " ==" << std::endl;
}

/// Prints the time since `start`.
void took(std::chrono::steady_clock::time_point start, std::string_view what) {
  std::chrono::duration<double> d = std::chrono::steady_clock::now() - start;
  std::cout << "  " << what << " took " << std::fixed << std::setprecision(2) << d.count() << " s"
            << std::defaultfloat << std::endl;
}

std::string indent(const std::string& text, const std::string& prefix) {
  std::string out = prefix;
  for (char c : text) {
    out += c;
    if (c == '\n')
      out += prefix;
  }
  while (!out.empty() && (out.back() == ' ' || out.back() == '\n'))
    out.pop_back();
  return out;
}

struct config : caf::actor_system_config {
  config() {
    keel::add_error_types(*this);
    keel::bus::add_bus_types(*this);
    set("scheduler.max-threads", 4);
    set("logger.file-verbosity", caf::atom("quiet"));
    set("logger.console-verbosity", caf::atom("quiet"));
  }
};

/// Orders "<prefix>01" .. "<prefix><n>"; every one has an amount and two lines.
std::vector<payment::order> make_orders(const std::string& prefix, int n) {
  std::vector<payment::order> out;
  for (int i = 1; i <= n; ++i) {
    std::ostringstream id;
    id << prefix << std::setw(2) << std::setfill('0') << i;
    out.push_back(
        {id.str(), 1000 + 100 * i, {{"sku-" + std::to_string(i % 4), 1 + i % 3}, {"sku-gift", 1}}});
  }
  return out;
}

/// Per-state counts, each failed saga with its error chain.
/// Begins a saga per order, then waits for each (orchestrated or
/// choreographed: both coordinators answer begin and wait); a failed begin or
/// wait is a failed check.
template <class Coordinator>
std::vector<keel::saga::outcome> run_orders(Coordinator& coord, const std::string& kind,
                                            const std::vector<payment::order>& orders) {
  auto t0 = std::chrono::steady_clock::now();
  for (const auto& o : orders)
    if (auto r = coord.begin(kind, o.id, payment::to_data(o)); !r)
      check(false, "begin " + o.id + ": " + keel::to_string(r.error()));
  std::vector<keel::saga::outcome> outs;
  for (const auto& o : orders) {
    auto out = coord.wait(o.id, std::chrono::seconds(60));
    if (!out) {
      check(false, "wait " + o.id + ": " + keel::to_string(out.error()));
      continue;
    }
    outs.push_back(std::move(*out));
  }
  took(t0, "running the " + std::to_string(orders.size()) + " sagas");
  return outs;
}

void summarize(const std::vector<keel::saga::outcome>& outs) {
  std::map<keel::saga_state, int> counts;
  for (const auto& o : outs)
    ++counts[o.state];
  std::cout << "  " << outs.size() << " sagas:";
  for (auto& [s, n] : counts)
    std::cout << ' ' << keel::to_string(s) << '=' << n;
  std::cout << '\n';
  for (const auto& o : outs) {
    if (o.state == keel::saga_state::completed)
      continue;
    std::cout << "  " << o.id << ": " << keel::to_string(o.state);
    if (!o.reason.empty())
      std::cout << " -- reason: " << o.reason;
    std::cout << '\n';
    if (o.failure)
      std::cout << indent(keel::format(o.failure, {.multiline = true, .max_stack_frames = 0}),
                          "      ")
                << '\n';
  }
}

std::map<keel::saga_state, int> count_states(const std::vector<keel::saga::outcome>& outs) {
  std::map<keel::saga_state, int> counts;
  for (const auto& o : outs)
    ++counts[o.state];
  return counts;
}

/// Checks the ledger against every saga in the journal; true when consistent.
bool check_ledger(keel::store::journal& j, payment::ledger& l) {
  auto sagas = j.sagas();
  if (!sagas) {
    check(false, "journal readable: " + keel::to_string(sagas.error()));
    return false;
  }
  auto rep = payment::check_consistency(l, *sagas);
  if (!rep) {
    check(false, "ledger readable: " + keel::to_string(rep.error()));
    return false;
  }
  std::cout << rep->to_string();
  check(rep->ok(), "the ledger is consistent with the journal: every charge completed or "
                   "refunded once, no leaked reservation, no live shipment of a rolled-back order");
  return rep->ok();
}

void print_history(const std::vector<keel::store::event_record>& h) {
  for (const auto& e : h) {
    std::cout << "    " << std::setw(3) << e.seq << ' ' << std::left << std::setw(22) << e.type
              << std::right << ' ' << e.name;
    if (e.attempt > 0)
      std::cout << " (attempt " << e.attempt << ')';
    std::cout << '\n';
  }
}

// -- orchestrated --------------------------------------------------------------------

std::shared_ptr<payment::faults> orchestrated_faults(uint64_t seed) {
  using payment::fault_kind;
  auto f = std::make_shared<payment::faults>(seed);
  f->add({.step = "*", .kind = fault_kind::none, .latency_min = 1ms, .latency_max = 4ms});
  f->add({.step = "allocate",
          .orders = {"order-03", "order-11", "order-13"},
          .code = keel::code::failed_precondition,
          .message = "out of stock"});
  f->add({.step = "charge",
          .orders = {"order-05"},
          .times = 1,
          .kind = fault_kind::fail_after_effect,
          .message = "reply lost after the charge"});
  f->add({.step = "ship",
          .orders = {"order-09"},
          .times = 1,
          .kind = fault_kind::throw_exception,
          .message = "shipping client: null carrier"});
  f->add({.step = "ship", .orders = {"order-07"}, .message = "carrier API down"});
  f->add({.step = "charge",
          .compensator = true,
          .orders = {"order-07"},
          .times = 2,
          .message = "payment provider busy"});
  f->add({.step = "notify", .orders = {"order-15"}, .message = "mail server down"});
  f->add({.step = "charge",
          .compensator = true,
          .orders = {"order-13"},
          .code = keel::code::failed_precondition,
          .message = "refund rejected: card account closed"});
  return f;
}

void run_orchestrated(caf::actor_system& sys, std::shared_ptr<keel::store::journal> journal,
                      std::shared_ptr<payment::ledger> ledger, uint64_t seed) {
  heading("orchestrated: keel::saga::coordinator, 20 orders");
  payment::flow_env env;
  env.ledger = ledger;
  env.faults = orchestrated_faults(seed);
  env.delayer = payment::spawn_delayer(sys);
  keel::saga::coordinator_config cfg;
  cfg.owner = "payment-example";
  auto coord = keel::saga::coordinator::start(sys, journal, {payment::make_definition(env)}, cfg);
  if (!coord) {
    check(false, "coordinator started: " + keel::to_string(coord.error()));
    return;
  }
  auto orders = make_orders("order-", 20);
  orders[16].amount = 0; // order-17 is invalid
  auto outs = run_orders(*coord, payment::kind, orders);
  summarize(outs);
  auto counts = count_states(outs);
  check(counts[keel::saga_state::completed] == 14,
        "14 orders completed (a lost reply and a throwing client were retried)");
  check(counts[keel::saga_state::rolled_back] == 5,
        "5 rolled back: out of stock (2), carrier down, mail server down, invalid order");
  check(counts[keel::saga_state::needs_intervention] == 1,
        "1 needs intervention: its refund was rejected for good");
  auto rows = ledger->orders();
  if (rows) {
    check((*rows)["order-05"].payments == 1, "order-05 was charged once although the charge "
                                             "ran twice");
    check((*rows)["order-07"].refunds == 1, "order-07 refunded once, after two failed attempts");
    check((*rows)["order-15"].uncancelled == 0 && (*rows)["order-15"].shipments == 1,
          "order-15's shipment was cancelled when notify failed");
  }
  auto ni = coord->list({.state = keel::saga_state::needs_intervention});
  check(ni && ni->size() == 1 && (*ni)[0].id == "order-13" && !(*ni)[0].reason.empty(),
        "list(needs_intervention) finds order-13 with its reason");
  if (auto h = coord->history("order-07")) {
    std::cout << "  history of order-07 (ship fails, the refund is retried):\n";
    print_history(*h);
  }
  coord->stop();
  // The steps hold the delayer's handle; a timer still pending in a finished
  // runner keeps them (and so the delayer) alive until it fires: stop it now.
  caf::anon_send_exit(env.delayer, caf::exit_reason::user_shutdown);
}

// -- choreographed ------------------------------------------------------------------

constexpr const char* topic = "payments";

/// A participant: one step of the flow as an actor on the bus. It reacts to
/// `after` (the previous step's done event), does its ledger work and emits
/// "<step>.done" (its payload is what it got plus what it adds) or
/// "<step>.failed"; it answers "<step>.compensate" with "<step>.compensated"
/// once undone. Compensations are idempotent by the event id (the same on
/// every resend); a failing compensator stays silent and the coordinator
/// sends the request again.
struct participant {
  std::string step;
  std::string after;
  /// Forward work: may add members to the payload.
  std::function<keel::expected<void>(const std::string& saga_id, boost::json::object& payload)>
      forward;
  /// Undo work, keyed by the compensation event's id (none: just acknowledge).
  std::function<keel::expected<void>(const std::string& saga_id, const std::string& key)> undo;
};

using run_atom = caf::atom_constant<caf::atom("pay_run")>;

caf::behavior participant_actor(caf::event_based_actor* self, caf::actor bus, participant p,
                                std::shared_ptr<payment::faults> faults) {
  auto publish = [=](std::string type, const std::string& saga_id, std::string payload) {
    keel::bus::publish(bus,
                       keel::bus::make_event(topic, std::move(type), saga_id, std::move(payload)));
  };
  auto work = [=](const keel::bus::event& e) {
    bool compensating = e.type == p.step + ".compensate";
    auto d = faults->decide(p.step, compensating, e.saga_id);
    if (compensating) {
      if (d.kind != payment::fault_kind::none)
        return; // no acknowledgement: the coordinator asks again
      if (p.undo)
        if (auto r = p.undo(e.saga_id, e.id); !r)
          return;
      publish(p.step + ".compensated", e.saga_id, "{}");
      return;
    }
    boost::system::error_code ec;
    auto v = boost::json::parse(e.payload, ec);
    boost::json::object payload = !ec && v.is_object() ? v.as_object() : boost::json::object{};
    keel::error err = d.kind == payment::fault_kind::none ? keel::error{} : d.err;
    if (!err)
      if (auto r = p.forward(e.saga_id, payload); !r)
        err = r.error();
    if (err)
      publish(p.step + ".failed", e.saga_id,
              boost::json::serialize(boost::json::object{{"error", keel::to_json(err)}}));
    else
      publish(p.step + ".done", e.saga_id, boost::json::serialize(payload));
  };
  return {
      [=](const keel::bus::event& e) {
        if (e.type != p.after && e.type != p.step + ".compensate")
          return;
        // Injected latency without blocking a scheduler thread.
        auto d = faults->decide("latency", false, e.saga_id);
        if (d.latency > 0ms)
          self->delayed_send(self, d.latency, run_atom::value, e);
        else
          work(e);
      },
      [=](run_atom, const keel::bus::event& e) { work(e); },
  };
}

void run_choreographed(caf::actor_system& sys, std::shared_ptr<keel::store::journal> journal,
                       std::shared_ptr<payment::ledger> ledger, uint64_t seed) {
  heading("choreographed: participants on an event bus, 8 orders");
  using payment::fault_kind;
  auto faults = std::make_shared<payment::faults>(seed);
  faults->add(
      {.step = "latency", .kind = fault_kind::none, .latency_min = 1ms, .latency_max = 4ms});
  faults->add({.step = "allocate",
               .orders = {"c-order-03"},
               .code = keel::code::failed_precondition,
               .message = "out of stock"});
  faults->add({.step = "ship", .orders = {"c-order-06"}, .message = "carrier API down"});
  faults->add({.step = "charge",
               .compensator = true,
               .orders = {"c-order-06"},
               .times = 2,
               .message = "payment provider busy"});

  keel::saga::choreography def{payment::kind + std::string{"-choreographed"}, topic,
                               "order.placed"};
  for (const auto& s : {"validate", "charge", "allocate", "ship"})
    def.step(keel::saga::choreography_step::conventional(s, 5s));
  def.step({.name = "notify", .done = "notify.done", .failed = "notify.failed", .timeout = 5s});
  def.compensation_timeout(100ms).compensation_attempts(10).rollback_deadline(30s);

  auto bus = keel::bus::spawn_event_bus(sys);
  auto order_of = [](const std::string& id, const boost::json::object& payload) {
    return payment::from_data(id, keel::saga::data{payload});
  };
  std::vector<participant> ps = {
      {"validate",
       "order.placed",
       [order_of](const std::string& id, boost::json::object& payload) -> keel::expected<void> {
         auto o = order_of(id, payload);
         if (!o)
           return o.error();
         if (o->amount <= 0 || o->items.empty())
           return keel::invalid_argument_error("order " + id + " is invalid");
         return {};
       },
       {}},
      {"charge", "validate.done",
       [=](const std::string& id, boost::json::object& payload) -> keel::expected<void> {
         auto o = order_of(id, payload);
         if (!o)
           return o.error();
         auto pid = ledger->charge(id + "/charge", id, o->amount);
         if (!pid)
           return pid.error();
         payload["payment_id"] = *pid;
         return {};
       },
       [=](const std::string& id, const std::string& key) -> keel::expected<void> {
         auto r = ledger->refund(key, id);
         if (!r)
           return r.error();
         return {};
       }},
      {"allocate", "charge.done",
       [=](const std::string& id, boost::json::object& payload) -> keel::expected<void> {
         auto o = order_of(id, payload);
         if (!o)
           return o.error();
         return ledger->reserve(id + "/allocate", id, o->items);
       },
       [=](const std::string& id, const std::string& key) { return ledger->release(key, id); }},
      {"ship", "allocate.done",
       [=](const std::string& id, boost::json::object& payload) -> keel::expected<void> {
         auto sid = ledger->ship(id + "/ship", id);
         if (!sid)
           return sid.error();
         payload["shipment_id"] = *sid;
         return {};
       },
       [=](const std::string& id, const std::string& key) {
         return ledger->cancel_shipment(key, id);
       }},
      {"notify",
       "ship.done",
       [=](const std::string& id, boost::json::object&) {
         return ledger->notify(id + "/notify", id);
       },
       {}},
  };
  std::vector<caf::actor> actors;
  {
    caf::scoped_actor self{sys};
    for (auto& p : ps) {
      actors.push_back(sys.spawn(participant_actor, bus, p, faults));
      // Subscribed before the first order is placed.
      self->request(bus, 5s, keel::bus::subscribe_atom::value, std::string{topic}, actors.back())
          .receive([] {}, [](caf::error&) {});
    }
  }
  keel::saga::coordinator_config cfg;
  cfg.owner = "payment-example-choreography";
  auto coord = keel::saga::choreography_coordinator::start(sys, journal, bus, {def}, cfg);
  if (!coord) {
    check(false, "choreography coordinator started: " + keel::to_string(coord.error()));
    return;
  }
  auto outs = run_orders(*coord, def.kind(), make_orders("c-order-", 8));
  summarize(outs);
  auto counts = count_states(outs);
  check(counts[keel::saga_state::completed] == 6, "6 orders completed");
  check(counts[keel::saga_state::rolled_back] == 2,
        "2 rolled back by compensation events in reverse order (out of stock; carrier down, its "
        "refund acknowledged on the third request)");
  if (auto h = coord->history("c-order-06")) {
    std::cout << "  history of c-order-06:\n";
    print_history(*h);
  }
  coord->stop();
  for (auto& a : actors)
    caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(bus, caf::exit_reason::user_shutdown);
}

// -- crash-resume ----------------------------------------------------------------------

keel::expected<std::shared_ptr<keel::store::journal>> open_journal(const fs::path& dir) {
  return keel::store::open_sqlite_journal((dir / "journal.db").string());
}

/// The child: starts slow sagas and waits to be killed.
[[noreturn]] void crash_child(const fs::path& dir, int ready_fd) {
  auto journal = open_journal(dir);
  auto ledger = payment::ledger::open((dir / "ledger.db").string());
  if (!journal || !ledger)
    std::_Exit(3);
  config cfg;
  caf::actor_system sys{cfg};
  payment::flow_env env;
  env.ledger = std::move(*ledger);
  env.faults = std::make_shared<payment::faults>(1);
  env.faults->add(
      {.step = "*", .kind = payment::fault_kind::none, .latency_min = 10ms, .latency_max = 40ms});
  env.faults->add({.step = "allocate",
                   .orders = {"r-order-02", "r-order-05", "r-order-11", "r-order-17"},
                   .code = keel::code::failed_precondition,
                   .message = "out of stock"});
  env.delayer = payment::spawn_delayer(sys);
  keel::saga::coordinator_config ccfg;
  ccfg.owner = "payment-example-resume";
  auto coord = keel::saga::coordinator::start(sys, *journal, {payment::make_definition(env)}, ccfg);
  if (!coord)
    std::_Exit(3);
  for (const auto& o : make_orders("r-order-", 20))
    (void)coord->begin(payment::kind, o.id, payment::to_data(o));
  char c = 'r';
  (void)!::write(ready_fd, &c, 1);
  for (;;)
    std::this_thread::sleep_for(1s);
}

void run_crash_resume(const fs::path& dir) {
  heading("crash-resume: SIGKILL in the middle, then resume");
  int fds[2];
  if (::pipe(fds) != 0) {
    check(false, "pipe");
    return;
  }
  std::cout.flush();
  // No thread runs yet in this process: forking is safe.
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    crash_child(dir, fds[1]);
  }
  ::close(fds[1]);
  char c = 0;
  bool ready = ::read(fds[0], &c, 1) == 1;
  ::close(fds[0]);
  check(ready, "child started 20 sagas (each step takes 10-40 ms)");
  std::this_thread::sleep_for(200ms);
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  check(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "child killed with SIGKILL");

  auto journal = open_journal(dir);
  if (!journal) {
    check(false, "journal opens after the kill: " + keel::to_string(journal.error()));
    return;
  }
  auto unfinished = (*journal)->sagas({.unfinished_only = true});
  size_t left = unfinished ? unfinished->size() : 0;
  std::cout << "  after the kill the journal has " << left << " unfinished sagas\n";
  if (unfinished)
    for (const auto& r : *unfinished)
      std::cout << "    " << r.id << ": " << keel::to_string(r.state) << " at step " << r.step
                << ", completed [" <<
          [&] {
            std::string s;
            for (const auto& n : r.completed)
              s += (s.empty() ? "" : " ") + n;
            return s;
          }() << "]\n";

  auto ledger = payment::ledger::open((dir / "ledger.db").string());
  if (!ledger) {
    check(false, "ledger opens: " + keel::to_string(ledger.error()));
    return;
  }
  std::shared_ptr<payment::ledger> shared_ledger = std::move(*ledger);
  config cfg;
  caf::actor_system sys{cfg};
  payment::flow_env env;
  env.ledger = shared_ledger;
  env.faults = std::make_shared<payment::faults>(1);
  env.faults->add({.step = "allocate",
                   .orders = {"r-order-02", "r-order-05", "r-order-11", "r-order-17"},
                   .code = keel::code::failed_precondition,
                   .message = "out of stock"});
  env.delayer = payment::spawn_delayer(sys);
  keel::saga::coordinator_config ccfg;
  ccfg.owner = "payment-example-resume"; // the same owner: its leases are taken back at once
  auto coord = keel::saga::coordinator::start(sys, *journal, {payment::make_definition(env)}, ccfg);
  if (!coord) {
    check(false, "coordinator restarted: " + keel::to_string(coord.error()));
    return;
  }
  std::cout << "  the restarted coordinator resumed " << coord->resumed().size() << " sagas\n";
  check(coord->resumed().size() == left, "every unfinished saga was resumed");
  // Orders whose begin never reached the journal are started now.
  std::vector<keel::saga::outcome> outs;
  for (const auto& o : make_orders("r-order-", 20)) {
    auto known = (*journal)->saga(o.id);
    if (known && !*known)
      (void)coord->begin(payment::kind, o.id, payment::to_data(o));
    auto out = coord->wait(o.id, 60s);
    if (!out) {
      check(false, "wait " + o.id + ": " + keel::to_string(out.error()));
      continue;
    }
    outs.push_back(std::move(*out));
  }
  summarize(outs);
  auto counts = count_states(outs);
  check(counts[keel::saga_state::completed] + counts[keel::saga_state::rolled_back] == 20,
        "all 20 sagas ended completed or rolled_back");
  check(counts[keel::saga_state::rolled_back] == 4, "the 4 out-of-stock orders were rolled back");
  coord->stop();
  caf::anon_send_exit(env.delayer, caf::exit_reason::user_shutdown);
  check_ledger(**journal, *shared_ledger);
}

} // namespace

int main(int argc, char** argv) {
  std::optional<fs::path> dir;
  bool crash_resume = false;
  uint64_t seed = 2024;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--crash-resume")
      crash_resume = true;
    else if (a == "--seed" && i + 1 < argc)
      seed = std::strtoull(argv[++i], nullptr, 10);
    else if (!a.empty() && a[0] != '-' && !dir)
      dir = a;
    else {
      std::cerr << "usage: " << argv[0] << " [work-dir] [--crash-resume] [--seed N]\n";
      return 2;
    }
  }
  bool temporary = !dir;
  if (temporary) {
    std::string tmpl = (fs::temp_directory_path() / "keel-payment-XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) {
      std::cerr << "cannot create a directory under " << fs::temp_directory_path() << '\n';
      return 2;
    }
    dir = tmpl;
  }
  fs::create_directories(*dir);
  std::cout << "work directory: " << dir->string() << " (journal.db, ledger.db)\n";

  if (crash_resume) {
    run_crash_resume(*dir);
  } else {
    auto journal = open_journal(*dir);
    auto ledger = payment::ledger::open((*dir / "ledger.db").string());
    if (!journal || !ledger) {
      std::cerr << (journal ? ledger.error() : journal.error()) << '\n';
      return 2;
    }
    std::shared_ptr<payment::ledger> shared_ledger = std::move(*ledger);
    {
      config cfg;
      caf::actor_system sys{cfg};
      run_orchestrated(sys, *journal, shared_ledger, seed);
      run_choreographed(sys, *journal, shared_ledger, seed);
    }
    heading("ledger consistency (both runs)");
    check_ledger(**journal, *shared_ledger);
  }
  std::cout << '\n' << (failed_checks == 0 ? "all checks passed" : "SOME CHECKS FAILED") << '\n';
  if (failed_checks == 0 && temporary)
    fs::remove_all(*dir);
  return failed_checks == 0 ? 0 : 1;
}
