// The seed's ETL importer ("ETL with aggregation and rollback") as a keel
// pipeline that stores into a real SQLite database:
//
//   CSV rows -> parse (map) -> transform (map, 2 workers) -> batch (100 rows or 20 ms)
//            -> store (sink: one SAVEPOINT and a prepared INSERT per group)
//
// The seed's three error categories, under error_policy::hybrid():
//  - per-item: a malformed row makes parse return invalid_argument. The row
//    fails, the others go on; the failures are aggregated into the run error
//    and listed in result.failures with their stage and row.
//  - poison: a few rows crash the (simulated) legacy FX library in transform
//    on every attempt. Each throw restarts the transform worker (its
//    supervisor), the row is retried, and after the last attempt it goes to
//    the dead letters with a copy of its value; the import continues.
//  - critical: a row in an unknown currency means the exchange-rate table is
//    incomplete (failed_precondition): the run fails fast, in-flight rows end
//    cancelled, and the rows already stored are rolled back.
//
// The whole import runs inside one SQLite transaction: BEGIN before the run,
// COMMIT when the run had no critical error, ROLLBACK otherwise (the seed
// deletes the stored rows one by one; a transaction does it atomically).
//
// Two imports run: the first (2,000 rows, 2% bad, 3 poison) commits; the
// second (2,000 rows, one in an unknown currency in the middle) is rolled
// back, and the table then holds exactly the rows of the first. Every claim
// is checked; a failed check exits with status 1 (this also runs as the CTest
// smoke test example_etl_importer).
//
// Usage: etl_importer [database-file]   (default: a file in the temp
// directory, removed at the end; a given file is kept, and its `orders`
// table is replaced).

#include "keel/error.hpp"
#include "keel/pipeline.hpp"

#include <caf/all.hpp>
#include <sqlite3.h>

#include <algorithm>
#include <any>
#include <charconv>
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#include <unistd.h>

using namespace std::chrono_literals;

namespace {

// -- checks and output -------------------------------------------------------------

int failed_checks = 0;

void check(bool ok, const std::string& what) {
  std::cout << (ok ? "  ok   " : "  FAIL ") << what << "\n";
  if (!ok)
    ++failed_checks;
}

void heading(std::string_view title) {
  std::cout << "\n== " << title << " ==\n";
}

std::string money(int64_t cents) {
  std::string sign = cents < 0 ? "-" : "";
  cents = cents < 0 ? -cents : cents;
  auto frac = std::to_string(cents % 100);
  return sign + std::to_string(cents / 100) + "." + (frac.size() < 2 ? "0" : "") + frac;
}

struct config : caf::actor_system_config {
  config() {
    keel::add_error_types(*this);
    set("scheduler.max-threads", 2);
    // CAF 0.17 lets an actor keep its thread while its mailbox has messages
    // (unbounded max-throughput). With 2 threads and both transform workers
    // busy, the coordinator's progress ticks would wait for a gap; yielding
    // after a few batches keeps progress (and cancellation) timely.
    set("scheduler.max-throughput", 4);
  }
};

// -- the domain --------------------------------------------------------------------

/// An order row after parsing; `usd_cents` is set by transform.
struct order {
  int64_t id = 0;
  std::string customer;
  int64_t cents = 0; ///< amount in `currency`, in cents
  std::string currency;
  int64_t usd_cents = 0;
};

/// US cents per 1,000,000 cents of each currency (fixed point, so that the
/// expected sums below are exact).
const std::map<std::string, int64_t, std::less<>> usd_rates_ppm = {
    {"USD", 1'000'000}, {"EUR", 1'083'400}, {"GBP", 1'268'900}, {"CHF", 1'121'700}, {"JPY", 6'650},
};

constexpr int64_t fx_library_limit_cents = 100'000'000; // 1,000,000.00

/// What a call to the FX library costs (it asks a rate service): enough that
/// an import takes a few hundred milliseconds and reports progress.
constexpr auto fx_call_latency = 100us;

/// The legacy FX library transform calls. It has a bug: amounts above its
/// fixed-point range make it throw, every time (the poison rows).
int64_t legacy_fx_convert(int64_t cents, int64_t rate_ppm, std::string_view currency) {
  if (cents > fx_library_limit_cents)
    throw std::overflow_error("fx::convert: " + money(cents) + " " + std::string{currency}
                              + " exceeds the library's fixed-point range");
  return (cents * rate_ppm + 500'000) / 1'000'000;
}

/// parse: "id,customer,amount,currency" -> order. A malformed row is a
/// per-item error (invalid_argument) naming the order id.
keel::expected<order> parse_row(const std::string& row) {
  std::vector<std::string_view> f;
  std::string_view rest{row};
  for (;;) {
    auto comma = rest.find(',');
    f.push_back(rest.substr(0, comma));
    if (comma == std::string_view::npos)
      break;
    rest.remove_prefix(comma + 1);
  }
  order o;
  auto [p, ec] = std::from_chars(f[0].data(), f[0].data() + f[0].size(), o.id);
  if (ec != std::errc{} || p != f[0].data() + f[0].size())
    return keel::invalid_argument_error("row \"" + row + "\": the order id is not a number");
  auto bad = [&](std::string what) {
    return keel::invalid_argument_error("order " + std::to_string(o.id) + ": " + what);
  };
  if (f.size() != 4)
    return bad("expected 4 fields, got " + std::to_string(f.size()));
  if (f[1].empty())
    return bad("the customer is empty");
  o.customer = f[1];
  auto amount = f[2];
  if (amount.starts_with('-'))
    return bad("the amount " + std::string{amount} + " is negative");
  auto dot = amount.find('.');
  auto whole = amount.substr(0, dot);
  auto frac = dot == std::string_view::npos ? std::string_view{"00"} : amount.substr(dot + 1);
  int64_t units = 0, cents = 0;
  auto r1 = std::from_chars(whole.data(), whole.data() + whole.size(), units);
  auto r2 = std::from_chars(frac.data(), frac.data() + frac.size(), cents);
  if (whole.empty() || frac.size() != 2 || r1.ec != std::errc{}
      || r1.ptr != whole.data() + whole.size() || r2.ec != std::errc{}
      || r2.ptr != frac.data() + frac.size())
    return bad("the amount \"" + std::string{amount} + "\" is not a decimal with 2 places");
  o.cents = units * 100 + cents;
  if (f[3].size() != 3
      || !std::all_of(f[3].begin(), f[3].end(), [](char c) { return c >= 'A' && c <= 'Z'; }))
    return bad("the currency \"" + std::string{f[3]} + "\" is not a 3-letter ISO code");
  o.currency = f[3];
  return o;
}

/// transform: converts the amount to US cents. A currency the rate table
/// does not know is not the row's fault: the reference data is incomplete,
/// and every later row in that currency would be wrong too. It is reported as
/// failed_precondition, which the hybrid policy treats as critical.
struct fx_transform {
  const std::map<std::string, int64_t, std::less<>>* rates;

  keel::expected<order> operator()(const order& in) const {
    auto rate = rates->find(in.currency);
    if (rate == rates->end())
      return keel::wrap(
          keel::failed_precondition_error("exchange-rate table has no currency " + in.currency),
          "order " + std::to_string(in.id));
    std::this_thread::sleep_for(fx_call_latency);
    order out = in;
    out.usd_cents = legacy_fx_convert(in.cents, rate->second, in.currency);
    return out;
  }
};

// -- SQLite ---------------------------------------------------------------------------

/// A SQLite failure as a keel error: the file and SQLite's message, and a code
/// that says what to do about it. A busy or locked database is `unavailable`
/// (retryable; the group is retried); anything else is `internal` (the
/// hybrid policy makes it critical: the import fails fast and rolls back).
keel::error sqlite_error(sqlite3* db, int rc, std::string_view what, const std::string& path) {
  std::string msg = std::string{what} + " on " + path + ": "
                    + (db ? sqlite3_errmsg(db) : sqlite3_errstr(rc)) + " (" + sqlite3_errstr(rc)
                    + ")";
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return keel::unavailable_error(std::move(msg));
    default:
      return keel::internal_error(std::move(msg));
  }
}

/// The `orders` table of one database file.
class order_store {
public:
  static keel::expected<std::unique_ptr<order_store>> open(const std::string& path) {
    std::unique_ptr<order_store> s{new order_store(path)};
    int rc = sqlite3_open(path.c_str(), &s->db_);
    if (rc != SQLITE_OK)
      return sqlite_error(s->db_, rc, "open", path);
    sqlite3_busy_timeout(s->db_, 1000);
    if (auto err = s->exec("DROP TABLE IF EXISTS orders;"
                           "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT NOT NULL,"
                           " amount_cents INTEGER NOT NULL, currency TEXT NOT NULL,"
                           " usd_cents INTEGER NOT NULL, import TEXT NOT NULL)"))
      return err;
    rc = sqlite3_prepare_v2(s->db_,
                            "INSERT INTO orders (id, customer, amount_cents, currency, usd_cents, "
                            "import) VALUES (?, ?, ?, ?, ?, ?)",
                            -1, &s->insert_, nullptr);
    if (rc != SQLITE_OK)
      return sqlite_error(s->db_, rc, "prepare INSERT", path);
    return s;
  }

  ~order_store() {
    sqlite3_finalize(insert_);
    sqlite3_close(db_);
  }

  order_store(const order_store&) = delete;
  order_store& operator=(const order_store&) = delete;

  /// Runs SQL without results.
  keel::error exec(const std::string& sql) {
    char* msg = nullptr;
    int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &msg);
    sqlite3_free(msg);
    if (rc != SQLITE_OK)
      return sqlite_error(db_, rc, "\"" + sql.substr(0, 40) + "\"", path_);
    return {};
  }

  /// Runs a query that returns one integer.
  int64_t query_int(const std::string& sql) {
    sqlite3_stmt* st = nullptr;
    int64_t v = -1;
    if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &st, nullptr) == SQLITE_OK
        && sqlite3_step(st) == SQLITE_ROW)
      v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
  }

  /// The sink: stores one group atomically (a SAVEPOINT inside the import's
  /// transaction), so that a group that fails half way leaves nothing behind
  /// and can be retried.
  keel::error insert_group(const std::vector<order>& group) {
    std::lock_guard<std::mutex> guard{mtx_};
    if (auto err = exec("SAVEPOINT store_group"))
      return err;
    for (const auto& o : group) {
      sqlite3_reset(insert_);
      sqlite3_bind_int64(insert_, 1, o.id);
      sqlite3_bind_text(insert_, 2, o.customer.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_int64(insert_, 3, o.cents);
      sqlite3_bind_text(insert_, 4, o.currency.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_int64(insert_, 5, o.usd_cents);
      sqlite3_bind_text(insert_, 6, import_.c_str(), -1, SQLITE_TRANSIENT);
      int rc = sqlite3_step(insert_);
      if (rc != SQLITE_DONE) {
        auto err = sqlite_error(db_, rc, "INSERT order " + std::to_string(o.id), path_);
        sqlite3_reset(insert_);
        (void)exec("ROLLBACK TO store_group; RELEASE store_group");
        return err;
      }
    }
    ++groups_;
    return exec("RELEASE store_group");
  }

  /// The order ids stored in [from, to].
  std::set<int64_t> ids(int64_t from, int64_t to) {
    std::set<int64_t> xs;
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db_, "SELECT id FROM orders WHERE id BETWEEN ? AND ?", -1, &st, nullptr)
        == SQLITE_OK) {
      sqlite3_bind_int64(st, 1, from);
      sqlite3_bind_int64(st, 2, to);
      while (sqlite3_step(st) == SQLITE_ROW)
        xs.insert(sqlite3_column_int64(st, 0));
    }
    sqlite3_finalize(st);
    return xs;
  }

  void begin_import(std::string name) {
    import_ = std::move(name);
    groups_ = 0;
  }

  uint64_t groups() const { return groups_; }

  const std::string& path() const { return path_; }

private:
  explicit order_store(std::string path) : path_(std::move(path)) {}

  std::string path_;
  sqlite3* db_ = nullptr;
  sqlite3_stmt* insert_ = nullptr;
  std::mutex mtx_; // the sink has one worker; the lock documents the invariant
  std::string import_;
  uint64_t groups_ = 0;
};

// -- the input --------------------------------------------------------------------------

/// What the generator knows about each row: the expectations of the checks.
struct input {
  std::vector<std::string> rows;
  std::set<uint64_t> bad;     ///< positions of malformed rows
  std::set<int64_t> poison;   ///< order ids of rows the FX library crashes on
  std::set<int64_t> good_ids; ///< order ids that must be stored
  int64_t good_usd_cents = 0; ///< their sum, converted independently
  int64_t good_cents = 0;     ///< their sum in original currency cents
  std::optional<int64_t> critical;
};

uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

/// `n` rows with ids from `first_id`. With `faults`: every 50th row is
/// malformed (2%, five kinds) and 3 rows are poison. `critical_at`: that row
/// is in a currency the rate table does not have.
input make_input(int64_t first_id, size_t n, bool faults, std::optional<size_t> critical_at) {
  static const char* customers[] = {"acme", "globex", "initech", "umbrella", "hooli", "stark"};
  static const char* currencies[] = {"USD", "EUR", "GBP", "CHF", "JPY"};
  const std::set<size_t> poison_at = {333, 1001, 1777};
  input in;
  for (size_t i = 0; i < n; ++i) {
    auto id = first_id + static_cast<int64_t>(i);
    auto h = mix(static_cast<uint64_t>(id));
    std::string customer = customers[h % 6];
    std::string currency = currencies[(h >> 8) % 5];
    int64_t cents = 100 + static_cast<int64_t>((h >> 16) % 5'000'000); // 1.00 .. 50,000.99
    std::string sid = std::to_string(id);
    if (faults && i % 50 == 17) {
      in.bad.insert(i);
      switch ((i / 50) % 5) {
        case 0:
          in.rows.push_back(sid + "," + customer + "," + money(cents)); // a field missing
          break;
        case 1:
          in.rows.push_back(sid + "," + customer + ",12x.50," + currency);
          break;
        case 2:
          in.rows.push_back(sid + "," + customer + ",-" + money(cents) + "," + currency);
          break;
        case 3:
          in.rows.push_back(sid + ",," + money(cents) + "," + currency);
          break;
        default:
          in.rows.push_back(sid + "," + customer + "," + money(cents) + ",euro");
          break;
      }
      continue;
    }
    if (faults && poison_at.contains(i)) {
      cents = 250'000'000 + static_cast<int64_t>(i); // 2,500,000.xx: beyond the FX library
      in.poison.insert(id);
    } else if (critical_at && *critical_at == i) {
      currency = "XYZ";
      in.critical = id;
    } else {
      in.good_ids.insert(id);
      in.good_cents += cents;
      in.good_usd_cents += (cents * usd_rates_ppm.at(currency) + 500'000) / 1'000'000;
    }
    in.rows.push_back(sid + "," + customer + "," + money(cents) + "," + currency);
  }
  return in;
}

// -- one import ---------------------------------------------------------------------------

struct import_outcome {
  keel::run_result<void> result;
  bool committed = false;
  int64_t stored_before_end = 0; ///< rows of this import in the table before COMMIT/ROLLBACK
};

/// Runs one import inside a transaction and commits or rolls back.
import_outcome run_import(caf::actor_system& sys, order_store& store, const std::string& name,
                          std::vector<std::string> rows, int64_t first_id) {
  keel::run_config rc;
  rc.name = name;
  // hybrid() classifies each failed row's error (after its retries):
  //  - critical (internal, data_loss, failed_precondition, permission_denied,
  //    unauthenticated): the run fails fast; it is cancelled and returns it;
  //  - poison (panic: the row crashed its stage on every attempt): the row
  //    goes to result.dead_letters and the run goes on;
  //  - item (everything else, e.g. invalid_argument): the row fails, the run
  //    goes on, and its error joins the run's aggregated error;
  //  - skip: none by default (a rule such as .on(code::already_exists,
  //    error_class::skip) would count duplicates as skipped).
  rc.policy = keel::error_policy::hybrid();
  // Retries apply to retryable codes only (unavailable, e.g. a busy database,
  // resource_exhausted, deadline_exceeded, aborted, and panic): 3 attempts.
  rc.retry = keel::retry_policy{}.with_max_attempts(3).with_backoff(1ms, 20ms);
  rc.batch_size = 64;
  rc.progress_every = 50ms;
  rc.on_progress = [](const keel::run_progress& p) {
    std::cout << "  progress " << p.name << ": " << p.from_source << " rows read, " << p.ended
              << " ended, " << p.failed << " failed after "
              << std::chrono::duration_cast<std::chrono::milliseconds>(p.elapsed).count() << "ms\n";
  };

  import_outcome out;
  store.begin_import(name);
  if (auto err = store.exec("BEGIN IMMEDIATE")) {
    out.result.error = err;
    return out;
  }
  std::cout << "BEGIN (" << rows.size() << " rows)\n";
  out.result =
      keel::pipeline_from(std::move(rows))
          .map("parse", parse_row)
          .map("transform", fx_transform{&usd_rates_ppm}, keel::stage_options{}.with_workers(2))
          .batch("batch", 100, 20ms)
          .sink("store", [&store](const std::vector<order>& g) { return store.insert_group(g); })
          .run(sys, rc);
  const auto& r = out.result;
  out.stored_before_end =
      store.query_int("SELECT COUNT(*) FROM orders WHERE id >= " + std::to_string(first_id));
  // The seed: "Critical (DB down, etc.): fail-fast, rollback succeeded items."
  bool critical = r.failed_fast || r.cancelled || r.counts.lost > 0;
  if (!critical) {
    std::cout << "no critical error";
    if (r.error)
      std::cout << " (" << r.failures.size() << " per-row errors, reported below)";
    std::cout << ": ";
    if (auto err = store.exec("COMMIT")) {
      std::cout << "COMMIT failed: " << keel::to_string(err) << "\n";
      (void)store.exec("ROLLBACK");
    } else {
      out.committed = true;
      std::cout << "COMMIT, " << out.stored_before_end << " rows in " << store.groups()
                << " groups\n";
    }
  } else {
    (void)store.exec("ROLLBACK");
    std::cout << "critical error: " << keel::to_string(r.error) << "\nROLLBACK: the "
              << out.stored_before_end << " rows this import had stored are gone\n";
  }
  return out;
}

} // namespace

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  bool temp = argc < 2;
  std::string path = temp ? (fs::temp_directory_path()
                             / ("keel-etl-importer-" + std::to_string(::getpid()) + ".db"))
                                .string()
                          : argv[1];
  if (temp) {
    std::error_code ignored;
    fs::remove(path, ignored);
  }
  auto opened = order_store::open(path);
  if (!opened) {
    std::cerr << "etl_importer: " << keel::to_string(opened.error()) << "\n";
    return 1;
  }
  auto& store = **opened;
  std::cout << "== etl_importer: CSV orders -> parse -> transform -> batch -> SQLite ==\n"
            << "database: " << path << "\n";

  config cfg;
  caf::actor_system sys{cfg};

  // -- import 1: bad rows and poison rows, committed ---------------------------------------
  heading("import 1: 2,000 orders, 2% malformed, 3 that crash the FX library");
  auto in1 = make_input(1, 2000, true, std::nullopt);
  auto run1 = run_import(sys, store, "import-1", in1.rows, 1);
  const auto& r1 = run1.result;
  std::cout << r1.summary();

  std::cout << "\nper-row failures (" << r1.failures.size()
            << ", aggregated into the run error):\n";
  for (size_t i = 0; i < r1.failures.size() && i < 5; ++i) {
    const auto& f = r1.failures[i];
    std::cout << "  row " << f.item << " at " << f.stage << ": " << keel::to_string(f.error)
              << "\n";
  }
  if (r1.failures.size() > 5)
    std::cout << "  ... and " << r1.failures.size() - 5 << " more\n";
  std::cout << "run error: "
            << keel::format(r1.error, keel::format_options{.multiline = false, .max_children = 2})
            << "\n";

  std::cout << "\ndead letters (" << r1.dead_letters.size() << "):\n";
  std::set<int64_t> dead_ids;
  bool dead_ok = true;
  for (const auto& d : r1.dead_letters) {
    const auto* o = std::any_cast<order>(&d.value);
    if (o)
      dead_ids.insert(o->id);
    dead_ok = dead_ok && o && d.stage == "transform" && d.attempts == 3 && keel::is_panic(d.error);
    if (o)
      std::cout << "  order " << o->id << " (" << o->customer << ", " << money(o->cents) << " "
                << o->currency << ") at " << d.stage << " after " << d.attempts
                << " attempts: " << keel::to_string(d.error) << "\n";
  }

  std::cout << "\nchecks:\n";
  auto count1 = store.query_int("SELECT COUNT(*) FROM orders");
  auto usd1 = store.query_int("SELECT COALESCE(SUM(usd_cents), 0) FROM orders");
  auto cents1 = store.query_int("SELECT COALESCE(SUM(amount_cents), 0) FROM orders");
  check(run1.committed, "import 1 had no critical error and was committed");
  check(count1 == static_cast<int64_t>(in1.good_ids.size()) && store.ids(1, 2000) == in1.good_ids,
        "the table holds exactly the " + std::to_string(in1.good_ids.size()) + " good orders");
  check(usd1 == in1.good_usd_cents && cents1 == in1.good_cents,
        "their sums match the generator's: " + money(usd1) + " USD (converted), " + money(cents1)
            + " in original currencies");
  bool parse_failures = r1.failures.size() == in1.bad.size();
  for (const auto& f : r1.failures) {
    auto row_id = std::to_string(1 + static_cast<int64_t>(f.item));
    auto where = keel::as<keel::stage_info>(f.error);
    parse_failures = parse_failures && in1.bad.contains(f.item) && f.stage == "parse"
                     && keel::is_invalid_argument(f.error) && where && where->stage == "parse"
                     && where->item_id == std::to_string(f.item)
                     && keel::to_string(f.error).find(row_id) != std::string::npos;
  }
  check(parse_failures, "failures: the " + std::to_string(in1.bad.size())
                            + " malformed rows, each invalid_argument at stage parse, naming "
                              "its row (item) and order id");
  check(keel::is_invalid_argument(r1.error) && keel::failures(r1.error).size() == in1.bad.size(),
        "the run error aggregates the " + std::to_string(in1.bad.size()) + " row errors");
  check(dead_ids == in1.poison && dead_ok,
        "dead letters: the 3 poison orders, each a panic after 3 attempts at transform");
  check(r1.stages.at(1).restarts == 3 * in1.poison.size(),
        "transform was restarted " + std::to_string(r1.stages.at(1).restarts)
            + " times (3 poison rows x 3 attempts)");
  check(r1.counts.total() == r1.counts.ended() && r1.counts.lost == 0,
        "counts add up: " + std::to_string(r1.counts.total()) + " items (rows + groups), "
            + std::to_string(r1.counts.ended()) + " ended, 0 lost");
  check(r1.counts.consumed == in1.good_ids.size() && r1.counts.succeeded == r1.counts.created
            && r1.counts.succeeded == store.groups(),
        "every good row went into a group, and every group (" + std::to_string(store.groups())
            + ") was stored");

  // -- import 2: a critical error in the middle, rolled back -----------------------------------
  heading("import 2: 2,000 more orders, order 3001 is in a currency the rate table lacks");
  auto in2 = make_input(2001, 2000, false, size_t{1000});
  auto run2 = run_import(sys, store, "import-2", in2.rows, 2001);
  const auto& r2 = run2.result;
  std::cout << r2.summary();
  std::cout << "run error: " << keel::to_string(r2.error) << "\n";
  if (!r2.cancelled_items.empty())
    std::cout << "a cancelled row: row " << r2.cancelled_items.front().item << " at "
              << r2.cancelled_items.front().stage << ": "
              << keel::to_string(r2.cancelled_items.front().reason) << "\n";

  std::cout << "\nchecks:\n";
  auto where = keel::as<keel::stage_info>(r2.error);
  check(keel::is_failed_precondition(r2.error)
            && keel::to_string(r2.error).find("exchange-rate table has no currency XYZ")
                   != std::string::npos
            && where && where->stage == "transform",
        "import 2 failed fast with transform's critical error");
  check(r2.failures.size() == 1 && r2.failures.front().item == 1000
            && r2.failures.front().stage == "transform",
        "the one failed row is order 3001 (row 1000) at transform");
  bool cancel_reasons = std::all_of(
      r2.cancelled_items.begin(), r2.cancelled_items.end(), [](const keel::item_note& n) {
        return keel::is_cancelled(n.reason) && keel::is_failed_precondition(n.reason);
      });
  check(r2.counts.cancelled > 0 && cancel_reasons,
        std::to_string(r2.counts.cancelled)
            + " in-flight items ended cancelled, each naming the critical error");
  check(r2.counts.total() == r2.counts.ended() && r2.counts.lost == 0,
        "counts add up: " + std::to_string(r2.counts.total()) + " items, "
            + std::to_string(r2.counts.ended()) + " ended, 0 lost ("
            + std::to_string(r2.counts.not_started) + " rows never read)");
  check(!run2.committed, "import 2 was rolled back (it had stored "
                             + std::to_string(run2.stored_before_end) + " rows before the end)");
  auto count2 = store.query_int("SELECT COUNT(*) FROM orders");
  auto usd2 = store.query_int("SELECT COALESCE(SUM(usd_cents), 0) FROM orders");
  check(count2 == count1 && usd2 == usd1
            && store.query_int("SELECT COUNT(*) FROM orders WHERE import <> 'import-1'") == 0,
        "the table holds exactly the rows of import 1: " + std::to_string(count2) + " orders, "
            + money(usd2) + " USD");

  opened->reset();
  if (temp) {
    std::error_code ignored;
    fs::remove(path, ignored);
  }
  std::cout << "\n" << (failed_checks == 0 ? "all checks passed" : "some checks FAILED") << "\n";
  return failed_checks == 0 ? 0 : 1;
}
