/// @file
/// The payment example's "ledger": the side effects of the seed's payment
/// saga (charges, refunds, stock reservations, shipments, notifications) in a
/// real SQLite database of their own, separate from keel's journal.
///
/// Every operation is idempotent by its idempotency key (the saga step's
/// `idempotency_key()`, the same on every attempt and after a crash): it is an
/// `INSERT ... ON CONFLICT DO NOTHING` followed by a read-back, so running it
/// twice has the effect of running it once. Compensators work by order id,
/// not by what the forward step left in the saga data, so they are robust to
/// a forward step that never happened (nothing to refund: a no-op) or whose
/// outcome the saga never learned (the process crashed after the charge).
///
/// @code
///   auto l = payment::ledger::open("/tmp/pay/ledger.db");
///   if (!l) { std::cerr << l.error() << '\n'; return 1; }
///   auto pid = (*l)->charge("order-7/charge", "order-7", 4200);    // "pay-order-7"
///   auto again = (*l)->charge("order-7/charge", "order-7", 4200);  // same id, one row
///   (*l)->refund("order-7/charge/compensate", "order-7");          // exactly one refund
///   auto report = payment::check_consistency(**l, *journal->sagas());
///   if (!report->ok()) std::cerr << report->to_string();
/// @endcode
///
/// Thread-safe: one connection per ledger, guarded by a mutex (the saga
/// runners call it from several scheduler threads), in WAL mode with a busy
/// timeout (a second process, e.g. a test's checker, may read meanwhile).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "keel/error.hpp"
#include "keel/store/journal.hpp"

struct sqlite3;

namespace payment {

/// One line of an order.
struct line_item {
  std::string sku;
  int32_t qty = 0;
};

/// What the ledger holds for one order (for the checker and summaries).
struct order_rows {
  int payments = 0;
  int64_t charged = 0;
  int refunds = 0;
  int reservations = 0;
  int unreleased = 0;
  int shipments = 0;
  int uncancelled = 0;
  int notifications = 0;
};

/// The ledger database.
class ledger {
public:
  // -- constructors -----------------------------------------------------------

  /// Opens (or creates) the ledger at `path`: WAL, synchronous=NORMAL (a
  /// process crash loses nothing committed), a 5 s busy timeout.
  static keel::expected<std::unique_ptr<ledger>> open(const std::string& path);

  ledger(const ledger&) = delete;
  ledger& operator=(const ledger&) = delete;
  ~ledger();

  // -- forward operations -----------------------------------------------------

  /// Charges `amount` for `order_id`; returns the payment id. The first call
  /// with `key` charges, later calls return the same payment id.
  keel::expected<std::string> charge(const std::string& key, const std::string& order_id,
                                     int64_t amount);

  /// Reserves stock for every item of the order, atomically.
  keel::expected<void> reserve(const std::string& key, const std::string& order_id,
                               const std::vector<line_item>& items);

  /// Creates the order's shipment; returns the shipment id.
  keel::expected<std::string> ship(const std::string& key, const std::string& order_id);

  /// Records the customer's notification (cannot be undone).
  keel::expected<void> notify(const std::string& key, const std::string& order_id);

  // -- compensations ----------------------------------------------------------

  /// Refunds the order's charge, at most once per payment. Returns false
  /// when there was no charge (nothing to undo), true when the charge is
  /// refunded (now or before).
  keel::expected<bool> refund(const std::string& key, const std::string& order_id);

  /// Releases every reservation of the order (none: a no-op).
  keel::expected<void> release(const std::string& key, const std::string& order_id);

  /// Cancels the order's shipment (none: a no-op).
  keel::expected<void> cancel_shipment(const std::string& key, const std::string& order_id);

  // -- reads ------------------------------------------------------------------

  /// The rows of every order the ledger knows, by order id.
  keel::expected<std::map<std::string, order_rows>> orders();

  /// Refunds per payment id (more than one would be a bug: the table forbids it).
  keel::expected<std::map<std::string, int>> refunds_per_payment();

  const std::string& path() const noexcept { return path_; }

private:
  ledger(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}

  keel::error sql_error(int rc, const std::string& what) const;
  keel::expected<void> exec(const char* sql);

  template <class F>
  auto in_transaction(const char* what, F&& f) -> decltype(f());

  std::mutex mtx_;
  sqlite3* db_;
  std::string path_;
};

/// The result of `check_consistency`.
struct consistency_report {
  /// Broken guarantees: a charge neither part of a completed order nor
  /// refunded, a leaked reservation, an uncancelled shipment of a rolled-back
  /// order, ... Empty when consistent.
  std::vector<std::string> violations;
  /// Not violations: sagas in needs_intervention (an operator finishes them),
  /// with what they left behind.
  std::vector<std::string> notes;
  size_t sagas = 0;
  size_t orders = 0;

  bool ok() const noexcept { return violations.empty(); }

  /// One line per violation and note, plus a verdict line.
  std::string to_string() const;
};

/// Options of `check_consistency`.
struct check_options {
  /// Sagas not in a terminal state are violations (the final check); when
  /// false they are skipped (a check while sagas still run).
  bool require_terminal = true;
};

/// Checks the ledger against the journal's saga records (saga id = order id):
/// - every charge belongs to a completed order (and is not refunded) or is
///   refunded exactly once;
/// - a completed order has its charge, reservations (not released), shipment
///   (not cancelled) and notification;
/// - no reservation of an order that did not complete is left unreleased;
/// - no shipment of a rolled-back order is left uncancelled, and a
///   rolled-back order sent no notification;
/// - the ledger has no rows of an order the journal does not know;
/// - needs_intervention sagas carry a reason (what they left is a note).
keel::expected<consistency_report>
check_consistency(ledger& l, const std::vector<keel::store::saga_record>& sagas,
                  check_options opts = {});

} // namespace payment
