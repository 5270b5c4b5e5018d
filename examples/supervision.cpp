// A supervision tree surviving a poison message.
//
//   orders (root, one_for_one)
//   └── ingest (rest_for_one)
//       ├── parse  stage: "id,qty" -> order; throws on malformed rows
//       └── store  stage: keeps a running total of stored quantities
//
// Ten rows go through parse then store. One row is poison (it throws every
// time): parse is restarted in place (same address, senders never notice), the
// row is retried, then quarantined into the dead letters with its error, and
// the rows behind it are handled in order. A flaky row fails once and succeeds
// on its retry. At the end the example prints the events, the tree and the
// dead letters, and checks what it promised (exit code 1 when not).

#include "keel/supervision.hpp"
#include "keel/error.hpp"

#include <caf/all.hpp>

#include <iostream>
#include <mutex>
#include <stdexcept>
#include <string>
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

/// parse: "id,qty" -> qty. A row starting with "flaky" fails on its first
/// attempt only.
caf::behavior parse(keel::stage_context& ctx) {
  return {[&ctx](const std::string& row) -> int {
    if (row.starts_with("flaky") && ctx.attempt() == 1)
      throw std::runtime_error("transient parser hiccup");
    auto comma = row.find(',');
    if (comma == std::string::npos)
      throw std::invalid_argument("malformed row '" + row + "': no comma");
    return std::stoi(row.substr(comma + 1));
  }};
}

/// store: adds quantities; state lives in the behavior and is lost on restart.
caf::behavior store(keel::stage_context&) {
  auto total = std::make_shared<int>(0);
  return {[total](int qty) { return *total += qty; }};
}

} // namespace

int main() {
  config cfg;
  caf::actor_system sys{cfg};
  auto events = std::make_shared<keel::event_hub>();
  std::vector<keel::supervision_event> seen;
  std::mutex seen_mtx;
  events->subscribe([&](const keel::supervision_event& e) {
    std::lock_guard<std::mutex> guard{seen_mtx};
    seen.push_back(e);
  });

  keel::supervisor_config ingest;
  ingest.strategy = keel::restart_strategy::rest_for_one;
  ingest.intensity = {10, 5s}; // the default (3 in 5 s) would escalate on the poison row
  ingest.children.push_back(keel::stage_spec("parse", parse).with_max_attempts(3));
  ingest.children.push_back(keel::stage_spec("store", store));

  keel::supervisor_config root;
  root.name = "orders";
  root.intensity = {10, 5s};
  root.backoff = {.min = 1ms, .max = 20ms, .jitter = 0.2};
  root.events = events;
  root.children.push_back(keel::supervisor_spec("ingest", ingest));

  auto tree = keel::supervision_tree::start(sys, root);
  auto parser = tree.child("ingest/parse").value();
  auto storer = tree.child("ingest/store").value();

  std::cout << "importing rows\n";
  std::vector<std::string> rows = {"a1,3", "a2,4", "flaky,7", "a3,5", "poison-row",
                                   "a4,1", "a5,2", "a6,6",    "a7,1", "a8,2"};
  caf::scoped_actor self{sys};
  int stored = 0;
  int rejected = 0;
  keel::error poison_error;
  for (const auto& row : rows) {
    self->request(parser, 5s, row)
        .receive(
            [&](int qty) {
              self->request(storer, 5s, qty)
                  .receive([&](int total) { stored = total; }, [&](caf::error&) { ++rejected; });
              std::cout << "  " << row << " -> stored " << qty << "\n";
            },
            [&](caf::error& err) {
              ++rejected;
              auto e = keel::from_caf_error(err);
              if (row == "poison-row")
                poison_error = e;
              std::cout << "  " << row << " -> rejected: " << keel::to_string(e) << "\n";
            });
  }

  auto snapshot = tree.tree().value();
  std::cout << "\ntree:\n" << keel::to_string(snapshot);
  auto letters = std::static_pointer_cast<keel::memory_dead_letter_sink>(tree.dead_letters());
  std::cout << "\ndead letters:\n";
  for (const auto& d : letters->entries())
    std::cout << "  " << d.stage << ": " << caf::to_string(d.payload) << " after " << d.attempts
              << " attempts: " << keel::to_string(d.error) << "\n";

  auto why = tree.shutdown();
  std::cout << "\nevents:\n";
  {
    std::lock_guard<std::mutex> guard{seen_mtx};
    for (const auto& e : seen)
      std::cout << "  " << keel::to_string(e) << "\n";
  }

  std::cout << "\nchecks:\n";
  const auto& ingest_node = snapshot.children.at(0);
  const auto& parse_node = ingest_node.children.at(0);
  const auto& store_node = ingest_node.children.at(1);
  check(tree.child("ingest/parse").has_value() == false, "after shutdown nothing answers");
  check(keel::is(poison_error, keel::code::panic), "the poison row's requester got its panic");
  check(letters->size() == 1, "one dead letter: the poison row");
  check(letters->size() == 1 && letters->entries().front().attempts == 3
            && letters->entries().front().stage == "orders/ingest/parse",
        "it names its stage and its 3 attempts");
  check(parse_node.restarts == 4, "parse restarted 4 times: flaky once, poison 3 times");
  check(parse_node.address == parser, "parse kept its address through every restart");
  check(store_node.restarts == parse_node.restarts,
        "rest_for_one: store restarted with parse (its state starts over)");
  check(rejected == 1, "only the poison row was rejected; the flaky row passed on its retry");
  check(stored > 0,
        "rows behind the poison row were stored (running total " + std::to_string(stored) + ")");
  check(!why, "the tree shut down cleanly");
  std::cout << (failures == 0 ? "all checks passed\n" : "some checks FAILED\n");
  return failures == 0 ? 0 : 1;
}
