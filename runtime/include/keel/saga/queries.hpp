/// @file
/// Reading sagas from a journal: outcomes, lists by state, histories.
///
/// Both saga coordinators (orchestrated and choreographed) answer these
/// queries, and so does a plain `saga_queries` over a journal, without an
/// actor system (tools, health checks, another process):
///
/// @code
///   keel::saga::saga_queries q{*keel::store::open_sqlite_journal("orders.journal")};
///   for (auto& r : *q.list({.state = keel::saga_state::needs_intervention}))
///     std::cout << r.id << ": " << r.reason << '\n';
///   for (auto& e : *q.history("order-17"))
///     std::cout << e.seq << ' ' << e.type << ' ' << e.name << '\n';
/// @endcode
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "keel/error.hpp"
#include "keel/saga/data.hpp"
#include "keel/store/journal.hpp"

namespace keel::saga {

/// How a saga ended (or where it is, for `status`).
struct outcome {
  std::string id;
  std::string kind;
  saga_state state = saga_state::pending;
  /// The forward error; when compensations failed, a node with the forward
  /// error as its cause and the compensation errors as its children. Empty
  /// when completed.
  error failure;
  /// Why an operator is needed (needs_intervention only).
  std::string reason;
  saga::data data;
};

/// `outcome` from a journal record (`data_loss` when its data is unreadable).
expected<outcome> to_outcome(const store::saga_record& r);

/// Saga queries over a journal.
class saga_queries {
public:
  explicit saga_queries(std::shared_ptr<store::journal> j) : journal_(std::move(j)) {}

  /// The saga's current state from the journal (`not_found` when unknown).
  expected<outcome> status(const std::string& id) const;

  /// Saga records matching `f` (orchestrated and choreographed), by id.
  expected<std::vector<store::saga_record>> list(const store::saga_filter& f = {}) const;

  /// The saga's full history, in order.
  expected<std::vector<store::event_record>> history(const std::string& id) const;

protected:
  const std::shared_ptr<store::journal>& journal() const noexcept { return journal_; }

private:
  std::shared_ptr<store::journal> journal_;
};

} // namespace keel::saga
