// The payment example's ledger: SQLite, one connection behind a mutex.

#include "payment/ledger.hpp"

#include <cstdio>
#include <set>
#include <sstream>
#include <utility>

#include <sqlite3.h>

namespace payment {

namespace {

constexpr const char* schema = R"sql(
CREATE TABLE IF NOT EXISTS payments(
  order_id   TEXT NOT NULL,
  payment_id TEXT NOT NULL,
  amount     INTEGER NOT NULL,
  idem_key   TEXT NOT NULL UNIQUE);
CREATE INDEX IF NOT EXISTS payments_order ON payments(order_id);
CREATE TABLE IF NOT EXISTS refunds(
  payment_id TEXT NOT NULL UNIQUE,
  amount     INTEGER NOT NULL,
  idem_key   TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS reservations(
  order_id TEXT NOT NULL,
  sku      TEXT NOT NULL,
  qty      INTEGER NOT NULL,
  idem_key TEXT NOT NULL UNIQUE,
  released INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS reservations_order ON reservations(order_id);
CREATE TABLE IF NOT EXISTS shipments(
  order_id    TEXT NOT NULL,
  shipment_id TEXT NOT NULL,
  idem_key    TEXT NOT NULL UNIQUE,
  cancelled   INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS shipments_order ON shipments(order_id);
CREATE TABLE IF NOT EXISTS notifications(
  order_id TEXT NOT NULL,
  idem_key TEXT NOT NULL UNIQUE);
)sql";

/// A prepared statement, finalized on destruction.
class statement {
public:
  statement(sqlite3* db, const char* sql) {
    rc_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr);
  }
  statement(const statement&) = delete;
  statement& operator=(const statement&) = delete;
  ~statement() { sqlite3_finalize(stmt_); }

  int prepare_rc() const noexcept { return rc_; }

  statement& bind(int i, const std::string& s) {
    sqlite3_bind_text(stmt_, i, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT);
    return *this;
  }

  statement& bind(int i, int64_t v) {
    sqlite3_bind_int64(stmt_, i, v);
    return *this;
  }

  /// SQLITE_ROW, SQLITE_DONE or an error code.
  int step() { return sqlite3_step(stmt_); }

  void reset() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }

  std::string text(int col) const {
    auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, col));
    return p ? std::string{p, static_cast<size_t>(sqlite3_column_bytes(stmt_, col))}
             : std::string{};
  }

  int64_t int64(int col) const { return sqlite3_column_int64(stmt_, col); }

private:
  sqlite3_stmt* stmt_ = nullptr;
  int rc_ = SQLITE_OK;
};

/// A short, stable id derived from an idempotency key (FNV-1a, 64 bit).
std::string derive_id(const char* prefix, const std::string& key) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : key) {
    h ^= c;
    h *= 1099511628211ull;
  }
  char buf[40];
  std::snprintf(buf, sizeof buf, "%s-%016llx", prefix, static_cast<unsigned long long>(h));
  return buf;
}

} // namespace

// -- constructors -----------------------------------------------------------------

keel::expected<std::unique_ptr<ledger>> ledger::open(const std::string& path) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(
      path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close(db);
    return keel::unavailable_error("ledger " + path + ": cannot open: " + msg);
  }
  sqlite3_busy_timeout(db, 5000);
  std::unique_ptr<ledger> l{new ledger(db, path)};
  for (const char* sql : {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", schema})
    if (auto r = l->exec(sql); !r)
      return r.error();
  return l;
}

ledger::~ledger() {
  sqlite3_close(db_);
}

// -- helpers ------------------------------------------------------------------------

keel::error ledger::sql_error(int rc, const std::string& what) const {
  std::string msg = "ledger " + path_ + ": " + what + ": " + sqlite3_errmsg(db_);
  // A lock held by another connection (a checker reading) goes away: retry.
  if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED)
    return keel::unavailable_error(std::move(msg));
  return keel::internal_error(std::move(msg));
}

keel::expected<void> ledger::exec(const char* sql) {
  char* err = nullptr;
  int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &err);
  if (rc != SQLITE_OK) {
    std::string msg = err ? err : sqlite3_errstr(rc);
    sqlite3_free(err);
    return sql_error(rc, std::string{"executing "} + sql + " (" + msg + ")");
  }
  return {};
}

template <class F>
auto ledger::in_transaction(const char* what, F&& f) -> decltype(f()) {
  if (int rc = sqlite3_exec(db_, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr); rc != SQLITE_OK)
    return sql_error(rc, std::string{what} + ": begin");
  auto r = f();
  if (!r) {
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    return r;
  }
  if (int rc = sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr); rc != SQLITE_OK) {
    auto err = sql_error(rc, std::string{what} + ": commit");
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    return err;
  }
  return r;
}

// -- forward operations -------------------------------------------------------------

keel::expected<std::string> ledger::charge(const std::string& key, const std::string& order_id,
                                           int64_t amount) {
  std::lock_guard guard{mtx_};
  return in_transaction("charge", [&]() -> keel::expected<std::string> {
    statement ins{db_, "INSERT INTO payments(order_id, payment_id, amount, idem_key) "
                       "VALUES(?1, ?2, ?3, ?4) ON CONFLICT(idem_key) DO NOTHING"};
    ins.bind(1, order_id).bind(2, derive_id("pay", key)).bind(3, amount).bind(4, key);
    if (int rc = ins.step(); rc != SQLITE_DONE)
      return sql_error(rc, "charge " + key);
    statement sel{db_, "SELECT payment_id FROM payments WHERE idem_key = ?1"};
    sel.bind(1, key);
    if (int rc = sel.step(); rc != SQLITE_ROW)
      return sql_error(rc, "charge " + key + ": reading back");
    return sel.text(0);
  });
}

keel::expected<void> ledger::reserve(const std::string& key, const std::string& order_id,
                                     const std::vector<line_item>& items) {
  std::lock_guard guard{mtx_};
  return in_transaction("reserve", [&]() -> keel::expected<void> {
    statement ins{db_, "INSERT INTO reservations(order_id, sku, qty, idem_key) "
                       "VALUES(?1, ?2, ?3, ?4) ON CONFLICT(idem_key) DO NOTHING"};
    for (const auto& item : items) {
      // One key per line: the step's key names the step, the sku the line.
      ins.bind(1, order_id)
          .bind(2, item.sku)
          .bind(3, int64_t{item.qty})
          .bind(4, key + "/" + item.sku);
      if (int rc = ins.step(); rc != SQLITE_DONE)
        return sql_error(rc, "reserve " + key);
      ins.reset();
    }
    return {};
  });
}

keel::expected<std::string> ledger::ship(const std::string& key, const std::string& order_id) {
  std::lock_guard guard{mtx_};
  return in_transaction("ship", [&]() -> keel::expected<std::string> {
    statement ins{db_, "INSERT INTO shipments(order_id, shipment_id, idem_key) "
                       "VALUES(?1, ?2, ?3) ON CONFLICT(idem_key) DO NOTHING"};
    ins.bind(1, order_id).bind(2, derive_id("shp", key)).bind(3, key);
    if (int rc = ins.step(); rc != SQLITE_DONE)
      return sql_error(rc, "ship " + key);
    statement sel{db_, "SELECT shipment_id FROM shipments WHERE idem_key = ?1"};
    sel.bind(1, key);
    if (int rc = sel.step(); rc != SQLITE_ROW)
      return sql_error(rc, "ship " + key + ": reading back");
    return sel.text(0);
  });
}

keel::expected<void> ledger::notify(const std::string& key, const std::string& order_id) {
  std::lock_guard guard{mtx_};
  statement ins{db_, "INSERT INTO notifications(order_id, idem_key) VALUES(?1, ?2) "
                     "ON CONFLICT(idem_key) DO NOTHING"};
  ins.bind(1, order_id).bind(2, key);
  if (int rc = ins.step(); rc != SQLITE_DONE)
    return sql_error(rc, "notify " + key);
  return {};
}

// -- compensations ------------------------------------------------------------------

keel::expected<bool> ledger::refund(const std::string& key, const std::string& order_id) {
  std::lock_guard guard{mtx_};
  return in_transaction("refund", [&]() -> keel::expected<bool> {
    // By order id, not by the payment id in the saga data: the charge may have
    // happened although the saga never learned its id (a crash in between).
    // payment_id is UNIQUE in refunds: a payment is refunded at most once,
    // whatever key a (buggy) caller passes.
    statement ins{db_, "INSERT INTO refunds(payment_id, amount, idem_key) "
                       "SELECT payment_id, amount, ?2 FROM payments WHERE order_id = ?1 "
                       "ON CONFLICT DO NOTHING"};
    ins.bind(1, order_id).bind(2, key);
    if (int rc = ins.step(); rc != SQLITE_DONE)
      return sql_error(rc, "refund " + key);
    statement sel{db_, "SELECT count(*) FROM payments WHERE order_id = ?1"};
    sel.bind(1, order_id);
    if (int rc = sel.step(); rc != SQLITE_ROW)
      return sql_error(rc, "refund " + key + ": reading back");
    return sel.int64(0) > 0;
  });
}

keel::expected<void> ledger::release(const std::string& key, const std::string& order_id) {
  std::lock_guard guard{mtx_};
  statement upd{db_, "UPDATE reservations SET released = 1 WHERE order_id = ?1"};
  upd.bind(1, order_id);
  if (int rc = upd.step(); rc != SQLITE_DONE)
    return sql_error(rc, "release " + key);
  return {};
}

keel::expected<void> ledger::cancel_shipment(const std::string& key, const std::string& order_id) {
  std::lock_guard guard{mtx_};
  statement upd{db_, "UPDATE shipments SET cancelled = 1 WHERE order_id = ?1"};
  upd.bind(1, order_id);
  if (int rc = upd.step(); rc != SQLITE_DONE)
    return sql_error(rc, "cancel shipment " + key);
  return {};
}

// -- reads ----------------------------------------------------------------------------

keel::expected<std::map<std::string, order_rows>> ledger::orders() {
  std::lock_guard guard{mtx_};
  std::map<std::string, order_rows> out;
  struct query {
    const char* sql;
    void (*apply)(order_rows&, const statement&);
  };
  const query queries[] = {
      {"SELECT p.order_id, count(*), sum(p.amount), count(r.payment_id) "
       "FROM payments p LEFT JOIN refunds r ON r.payment_id = p.payment_id GROUP BY p.order_id",
       [](order_rows& o, const statement& s) {
         o.payments = static_cast<int>(s.int64(1));
         o.charged = s.int64(2);
         o.refunds = static_cast<int>(s.int64(3));
       }},
      {"SELECT order_id, count(*), sum(released = 0) FROM reservations GROUP BY order_id",
       [](order_rows& o, const statement& s) {
         o.reservations = static_cast<int>(s.int64(1));
         o.unreleased = static_cast<int>(s.int64(2));
       }},
      {"SELECT order_id, count(*), sum(cancelled = 0) FROM shipments GROUP BY order_id",
       [](order_rows& o, const statement& s) {
         o.shipments = static_cast<int>(s.int64(1));
         o.uncancelled = static_cast<int>(s.int64(2));
       }},
      {"SELECT order_id, count(*) FROM notifications GROUP BY order_id",
       [](order_rows& o, const statement& s) { o.notifications = static_cast<int>(s.int64(1)); }},
  };
  for (const auto& q : queries) {
    statement s{db_, q.sql};
    if (s.prepare_rc() != SQLITE_OK)
      return sql_error(s.prepare_rc(), "reading orders");
    int rc;
    while ((rc = s.step()) == SQLITE_ROW)
      q.apply(out[s.text(0)], s);
    if (rc != SQLITE_DONE)
      return sql_error(rc, "reading orders");
  }
  return out;
}

keel::expected<std::map<std::string, int>> ledger::refunds_per_payment() {
  std::lock_guard guard{mtx_};
  std::map<std::string, int> out;
  statement s{db_, "SELECT payment_id, count(*) FROM refunds GROUP BY payment_id"};
  int rc;
  while ((rc = s.step()) == SQLITE_ROW)
    out[s.text(0)] = static_cast<int>(s.int64(1));
  if (rc != SQLITE_DONE)
    return sql_error(rc, "reading refunds");
  return out;
}

// -- consistency ----------------------------------------------------------------------

std::string consistency_report::to_string() const {
  std::ostringstream os;
  for (const auto& v : violations)
    os << "  VIOLATION " << v << '\n';
  for (const auto& n : notes)
    os << "  note      " << n << '\n';
  os << "  " << (ok() ? "consistent" : "INCONSISTENT") << ": " << sagas << " sagas, " << orders
     << " orders in the ledger, " << violations.size() << " violations, " << notes.size()
     << " notes\n";
  return os.str();
}

keel::expected<consistency_report>
check_consistency(ledger& l, const std::vector<keel::store::saga_record>& sagas,
                  check_options opts) {
  auto rows = l.orders();
  if (!rows)
    return rows.error();
  auto refunds = l.refunds_per_payment();
  if (!refunds)
    return refunds.error();
  consistency_report rep;
  rep.sagas = sagas.size();
  rep.orders = rows->size();
  auto violation = [&](const std::string& id, const std::string& what) {
    rep.violations.push_back(id + ": " + what);
  };
  for (const auto& [payment_id, n] : *refunds)
    if (n != 1)
      violation(payment_id, "refunded " + std::to_string(n) + " times");
  std::set<std::string> known;
  for (const auto& s : sagas) {
    known.insert(s.id);
    auto it = rows->find(s.id);
    order_rows o = it == rows->end() ? order_rows{} : it->second;
    std::string state{keel::to_string(s.state)};
    if (o.payments > 1)
      violation(s.id, "charged " + std::to_string(o.payments) + " times");
    switch (s.state) {
      case keel::saga_state::completed:
        if (o.payments != 1)
          violation(s.id, "completed without a charge");
        if (o.refunds != 0)
          violation(s.id, "completed but refunded");
        if (o.reservations == 0 || o.unreleased != o.reservations)
          violation(s.id, "completed but its reservations are missing or released");
        if (o.shipments == 0 || o.uncancelled != o.shipments)
          violation(s.id, "completed but its shipment is missing or cancelled");
        if (o.notifications != 1)
          violation(s.id, "completed but the customer was not notified");
        break;
      case keel::saga_state::rolled_back:
        if (o.refunds != o.payments)
          violation(s.id, "rolled back but " + std::to_string(o.payments - o.refunds)
                              + " charge(s) not refunded");
        if (o.unreleased != 0)
          violation(s.id, "rolled back but " + std::to_string(o.unreleased)
                              + " reservation(s) not released");
        if (o.uncancelled != 0)
          violation(s.id, "rolled back but its shipment is not cancelled");
        if (o.notifications != 0)
          violation(s.id, "rolled back but the customer was notified");
        break;
      case keel::saga_state::needs_intervention: {
        if (s.reason.empty())
          violation(s.id, "needs_intervention without a reason");
        std::string left;
        if (o.payments > o.refunds)
          left += " unrefunded charge;";
        if (o.unreleased > 0)
          left += " unreleased reservation;";
        if (o.uncancelled > 0)
          left += " uncancelled shipment;";
        rep.notes.push_back(
            s.id + ": needs intervention (" + s.reason + ")"
            + (left.empty() ? std::string{" nothing left behind"} : " left:" + left));
        break;
      }
      default:
        if (opts.require_terminal)
          violation(s.id, "saga not finished (" + state + ")");
        break;
    }
  }
  for (const auto& [id, o] : *rows) {
    if (known.count(id) != 0)
      continue;
    // Effects of an order without a saga record cannot be explained.
    if (o.payments > o.refunds || o.unreleased > 0 || o.uncancelled > 0 || o.notifications > 0)
      violation(id, "ledger rows of an order the journal does not know");
  }
  return rep;
}

} // namespace payment
