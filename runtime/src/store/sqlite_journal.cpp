// The SQLite journal: one connection, guarded by a mutex, with cached
// prepared statements.
//
// Opening reads before it writes: `application_id`, `user_version` and the
// number of schema objects decide whether the file is a new one, a keel
// journal (maybe to migrate), or something else, which is refused before
// anything (even the switch to WAL) touches it.
//
// A group is one transaction (`BEGIN IMMEDIATE` ... `COMMIT`) with a
// savepoint per batch: a failing batch is rolled back to its savepoint and
// the others still commit. When SQLite itself rolls the transaction back
// (disk full, I/O error), or BEGIN or COMMIT fail, every batch of the group
// gets that error and nothing is committed.

#include "keel/store/sqlite_journal.hpp"
#include "keel/store/detail/sqlite_migrations.hpp"

#include "keel/error/json.hpp"
#include "store/ops.hpp"

#include <sqlite3.h>

#include <boost/json.hpp>

#include <array>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>

namespace keel::store {

std::string_view to_string(durability d) noexcept {
  switch (d) {
    case durability::full:
      return "full";
    case durability::normal:
      return "normal";
    case durability::off:
      return "off";
  }
  return "unknown";
}

namespace detail {

namespace {

// Version 1: the initial schema. Never edit a shipped entry: add a migration.
const sqlite_migration migration_v1{
    1,
    {
        "CREATE TABLE sagas ("
        " id TEXT PRIMARY KEY NOT NULL, kind TEXT NOT NULL, mode TEXT NOT NULL,"
        " state INTEGER NOT NULL, step INTEGER NOT NULL, completed TEXT NOT NULL,"
        " data TEXT NOT NULL, failure TEXT NOT NULL, compensation_failure TEXT NOT NULL,"
        " reason TEXT NOT NULL, created INTEGER NOT NULL, updated INTEGER NOT NULL)",
        "CREATE INDEX sagas_by_state ON sagas (state, id)",
        "CREATE TABLE events ("
        " stream TEXT NOT NULL, seq INTEGER NOT NULL, at INTEGER NOT NULL, type TEXT NOT NULL,"
        " name TEXT NOT NULL, attempt INTEGER NOT NULL, detail TEXT NOT NULL,"
        " PRIMARY KEY (stream, seq)) WITHOUT ROWID",
        "CREATE TABLE dlq ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT, queue TEXT NOT NULL, key TEXT NOT NULL,"
        " payload TEXT NOT NULL, failure TEXT NOT NULL, attempts INTEGER NOT NULL,"
        " first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL, source TEXT NOT NULL)",
        "CREATE INDEX dlq_by_key ON dlq (queue, key, id)",
        "CREATE TABLE checkpoints (name TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL)"
        " WITHOUT ROWID",
        "CREATE TABLE processed ("
        " consumer TEXT NOT NULL, id TEXT NOT NULL, at INTEGER NOT NULL,"
        " PRIMARY KEY (consumer, id)) WITHOUT ROWID",
        "CREATE TABLE leases ("
        " name TEXT PRIMARY KEY NOT NULL, owner TEXT NOT NULL, expires INTEGER NOT NULL)"
        " WITHOUT ROWID",
    }};

const std::array<sqlite_migration, 1> keel_migrations{migration_v1};

} // namespace

std::span<const sqlite_migration> sqlite_migrations() {
  return keel_migrations;
}

} // namespace detail

namespace {

namespace json = boost::json;

/// The statements a journal prepares once and keeps.
enum class sql : size_t {
  begin,
  commit,
  rollback,
  savepoint,
  release,
  rollback_to,
  saga_get,
  sagas_list,
  saga_put,
  events_list,
  event_put,
  dlq_list,
  dlq_put,
  dlq_remove,
  dlq_update,
  checkpoint_get,
  checkpoint_put,
  processed_get,
  processed_put,
  lease_get,
  lease_put,
  lease_remove,
  count_,
};

constexpr std::array<const char*, static_cast<size_t>(sql::count_)> sql_text = {
    "BEGIN IMMEDIATE",
    "COMMIT",
    "ROLLBACK",
    "SAVEPOINT b",
    "RELEASE b",
    "ROLLBACK TO b",
    "SELECT id, kind, mode, state, step, completed, data, failure, compensation_failure,"
    " reason, created, updated FROM sagas WHERE id = ?1",
    "SELECT id, kind, mode, state, step, completed, data, failure, compensation_failure,"
    " reason, created, updated FROM sagas"
    " WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR kind = ?2)"
    " AND (?3 = 0 OR state NOT IN (3, 4, 5)) ORDER BY id LIMIT ?4",
    "INSERT OR REPLACE INTO sagas (id, kind, mode, state, step, completed, data, failure,"
    " compensation_failure, reason, created, updated)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    "SELECT seq, at, type, name, attempt, detail FROM events"
    " WHERE stream = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
    // seq = the stream's last + 1, in the same statement.
    "INSERT INTO events (stream, seq, at, type, name, attempt, detail)"
    " SELECT ?1, COALESCE(MAX(seq), 0) + 1, ?2, ?3, ?4, ?5, ?6 FROM events WHERE stream = ?1",
    "SELECT id, queue, key, payload, failure, attempts, first_seen, last_seen, source FROM dlq"
    " WHERE (?1 = '' OR queue = ?1) ORDER BY id LIMIT ?2",
    "INSERT INTO dlq (queue, key, payload, failure, attempts, first_seen, last_seen, source)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    "DELETE FROM dlq WHERE id = ?1",
    "UPDATE dlq SET attempts = ?2, last_seen = ?3, failure = ?4 WHERE id = ?1",
    "SELECT value FROM checkpoints WHERE name = ?1",
    "INSERT OR REPLACE INTO checkpoints (name, value) VALUES (?1, ?2)",
    "SELECT 1 FROM processed WHERE consumer = ?1 AND id = ?2",
    "INSERT OR IGNORE INTO processed (consumer, id, at) VALUES (?1, ?2, ?3)",
    "SELECT owner, expires FROM leases WHERE name = ?1",
    // Takes the lease when free, expired (expires <= ?4) or already ours, in
    // one statement; no change means another owner holds it.
    "INSERT INTO leases (name, owner, expires) VALUES (?1, ?2, ?3) ON CONFLICT (name) DO UPDATE"
    " SET owner = excluded.owner, expires = excluded.expires"
    " WHERE leases.owner = excluded.owner OR leases.expires <= ?4",
    "DELETE FROM leases WHERE name = ?1 AND owner = ?2",
};

/// Resets a statement and drops its bindings when a use of it ends, so that
/// no statement keeps a read snapshot open or points at freed strings.
class stmt_use {
public:
  explicit stmt_use(sqlite3_stmt* s) noexcept : s_(s) {}
  stmt_use(const stmt_use&) = delete;
  stmt_use& operator=(const stmt_use&) = delete;
  ~stmt_use() {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }

  stmt_use& bind(int i, std::string_view text) {
    // An empty string_view may have a null data(): SQLite would bind NULL.
    sqlite3_bind_text(s_, i, text.empty() ? "" : text.data(), static_cast<int>(text.size()),
                      SQLITE_STATIC);
    return *this;
  }

  stmt_use& bind(int i, int64_t x) {
    sqlite3_bind_int64(s_, i, x);
    return *this;
  }

  stmt_use& bind_null(int i) {
    sqlite3_bind_null(s_, i);
    return *this;
  }

  template <class T>
  stmt_use& bind(int i, const std::optional<T>& x) {
    return x ? bind(i, *x) : bind_null(i);
  }

  /// Binds `args` to the parameters ?1, ?2, ... in order.
  template <class... Args>
  stmt_use& bind_all(const Args&... args) {
    int i = 0;
    (bind(++i, args), ...);
    return *this;
  }

  int step() { return sqlite3_step(s_); }

  int64_t int_col(int i) const { return sqlite3_column_int64(s_, i); }

  std::string text_col(int i) const {
    auto p = reinterpret_cast<const char*>(sqlite3_column_text(s_, i));
    if (!p)
      return {};
    return std::string(p, static_cast<size_t>(sqlite3_column_bytes(s_, i)));
  }

private:
  sqlite3_stmt* s_;
};

std::string hex32(int32_t x) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", static_cast<uint32_t>(x));
  return buf;
}

class sqlite_journal final : public journal {
  /// One SQLite connection and its prepared statements.
  struct connection {
    sqlite3* db = nullptr;
    std::array<sqlite3_stmt*, static_cast<size_t>(sql::count_)> stmts{};
  };

public:
  sqlite_journal(std::string path, sqlite3* db) : path_(std::move(path)) { w_.db = db; }

  ~sqlite_journal() override {
    for (auto* c : {&r_, &w_}) {
      for (auto* s : c->stmts)
        sqlite3_finalize(s);
    }
    // The last connection's close checkpoints the WAL into the file.
    if (r_.db)
      sqlite3_close_v2(r_.db);
    sqlite3_close_v2(w_.db);
  }

  /// Opens the reader connection. Reads use their own connection so that they
  /// never wait behind a commit's fsync (WAL readers see the last committed
  /// state while a writer works).
  error open_reader(const sqlite_options& opts) {
    int rc =
        sqlite3_open_v2(path_.c_str(), &r_.db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nullptr);
    if (rc != SQLITE_OK)
      return sqlite_error(path_, rc,
                          std::string{"opening the reader: "}
                              + (r_.db ? sqlite3_errmsg(r_.db) : sqlite3_errstr(rc)));
    sqlite3_extended_result_codes(r_.db, 1);
    sqlite3_busy_timeout(r_.db, static_cast<int>(opts.busy_timeout.count()));
    return {};
  }

  /// Recognises, checks and migrates the file; see the file overview.
  error init(const sqlite_options& opts, std::span<const detail::sqlite_migration> migrations) {
    sqlite3_extended_result_codes(w_.db, 1);
    sqlite3_busy_timeout(w_.db, static_cast<int>(opts.busy_timeout.count()));
    int supported = migrations.empty() ? 0 : migrations.back().version;
    int64_t app_id = 0;
    int64_t version = 0;
    int64_t objects = 0;
    if (auto err = query_int("PRAGMA application_id", app_id))
      return err;
    if (auto err = query_int("PRAGMA user_version", version))
      return err;
    if (auto err = query_int("SELECT count(*) FROM sqlite_master", objects))
      return err;
    bool fresh = app_id == 0 && version == 0 && objects == 0;
    if (!fresh && app_id != sqlite_application_id)
      return failed_precondition_error(
          "journal " + path_ + " is not a keel journal (application_id "
          + hex32(static_cast<int32_t>(app_id)) + ", keel's is " + hex32(sqlite_application_id)
          + "; " + std::to_string(objects) + " schema objects); the file was left unchanged");
    if (version > supported)
      return failed_precondition_error(
          "journal " + path_ + " has schema version " + std::to_string(version)
          + ", newer than this keel supports (" + std::to_string(supported) + ")");
    if (opts.check_on_open && !fresh)
      if (auto err = quick_check())
        return err;
    if (auto err = set_wal())
      return err;
    if (auto err = exec(synchronous_pragma(opts.level), "setting durability"))
      return err;
    if (version < supported)
      return migrate(migrations);
    return {};
  }

  // -- writes -------------------------------------------------------------------

  std::vector<error> commit_group(std::span<const write_batch* const> batches) override {
    std::vector<error> result(batches.size());
    if (batches.empty())
      return result;
    std::lock_guard guard{mtx_};
    auto fail_all = [&](error err) {
      if (!sqlite3_get_autocommit(w_.db))
        std::ignore = run(sql::rollback, "rollback");
      for (auto& r : result)
        r = err;
      return result;
    };
    if (auto err = run(sql::begin, "begin"))
      return fail_all(std::move(err));
    for (size_t i = 0; i < batches.size(); ++i) {
      if (auto err = run(sql::savepoint, "savepoint"))
        return fail_all(std::move(err));
      auto err = apply(*batches[i]);
      if (!err) {
        if (auto e = run(sql::release, "release savepoint"))
          return fail_all(std::move(e));
        continue;
      }
      // SQLite rolls the whole transaction back on some errors (disk full,
      // I/O): then the group's earlier batches are gone too.
      if (sqlite3_get_autocommit(w_.db))
        return fail_all(std::move(err));
      if (auto e = run(sql::rollback_to, "rollback to savepoint"))
        return fail_all(std::move(e));
      if (auto e = run(sql::release, "release savepoint"))
        return fail_all(std::move(e));
      result[i] = detail::batch_error(*this, i, std::move(err));
    }
    if (auto err = run(sql::commit, "commit"))
      return fail_all(std::move(err));
    return result;
  }

  // -- reads --------------------------------------------------------------------

  expected<std::optional<saga_record>> saga(std::string_view id) override {
    std::lock_guard guard{rmtx_};
    std::optional<saga_record> result;
    auto take = [&](const stmt_use& q) { return read_saga(q, result.emplace()); };
    if (auto err = read(sql::saga_get, "reading saga " + std::string{id}, rows::first, take, id))
      return err;
    return result;
  }

  expected<std::vector<saga_record>> sagas(const saga_filter& f) override {
    std::lock_guard guard{rmtx_};
    std::optional<int64_t> state;
    if (f.state)
      state = static_cast<int64_t>(*f.state);
    std::vector<saga_record> result;
    auto take = [&](const stmt_use& q) { return read_saga(q, result.emplace_back()); };
    if (auto err = read(sql::sagas_list, "listing sagas", rows::all, take, state, f.kind,
                        int64_t{f.unfinished_only ? 1 : 0}, limit_of(f.limit)))
      return err;
    return result;
  }

  expected<std::vector<event_record>> events(std::string_view stream, uint64_t after,
                                             size_t limit) override {
    std::lock_guard guard{rmtx_};
    std::vector<event_record> result;
    auto take = [&](const stmt_use& q) {
      event_record e;
      e.stream = std::string{stream};
      e.seq = static_cast<uint64_t>(q.int_col(0));
      e.at = q.int_col(1);
      e.type = q.text_col(2);
      e.name = q.text_col(3);
      e.attempt = static_cast<uint32_t>(q.int_col(4));
      e.detail = q.text_col(5);
      result.push_back(std::move(e));
    };
    if (auto err = read(sql::events_list, "reading stream " + std::string{stream}, rows::all, take,
                        stream, clamp_to_int64(after), limit_of(limit)))
      return err;
    return result;
  }

  expected<std::vector<dlq_entry>> dlq(std::string_view queue, size_t limit) override {
    std::lock_guard guard{rmtx_};
    std::vector<dlq_entry> result;
    auto take = [&](const stmt_use& q) -> error {
      dlq_entry e;
      e.id = static_cast<uint64_t>(q.int_col(0));
      e.queue = q.text_col(1);
      e.key = q.text_col(2);
      e.payload = q.text_col(3);
      auto failure = read_error(q.text_col(4), "dlq", "id " + std::to_string(e.id), "failure");
      if (!failure)
        return std::move(failure).error();
      e.failure = std::move(*failure);
      e.attempts = static_cast<uint32_t>(q.int_col(5));
      e.first_seen = q.int_col(6);
      e.last_seen = q.int_col(7);
      e.source = q.text_col(8);
      result.push_back(std::move(e));
      return {};
    };
    if (auto err = read(sql::dlq_list, "reading the dead-letter queue", rows::all, take, queue,
                        limit_of(limit)))
      return err;
    return result;
  }

  expected<std::optional<std::string>> checkpoint(std::string_view name) override {
    std::lock_guard guard{rmtx_};
    std::optional<std::string> result;
    auto take = [&](const stmt_use& q) { result = q.text_col(0); };
    if (auto err = read(sql::checkpoint_get, "reading checkpoint " + std::string{name}, rows::first,
                        take, name))
      return err;
    return result;
  }

  expected<bool> processed(std::string_view consumer, std::string_view id) override {
    std::lock_guard guard{rmtx_};
    bool result = false;
    auto take = [&](const stmt_use&) { result = true; };
    if (auto err =
            read(sql::processed_get, "reading processed ids", rows::first, take, consumer, id))
      return err;
    return result;
  }

  expected<std::optional<lease_record>> lease(std::string_view name) override {
    std::lock_guard guard{rmtx_};
    std::optional<lease_record> result;
    auto take = [&](const stmt_use& q) {
      result = lease_record{std::string{name}, q.text_col(0), q.int_col(1)};
    };
    if (auto err =
            read(sql::lease_get, "reading lease " + std::string{name}, rows::first, take, name))
      return err;
    return result;
  }

  std::string describe() const override { return "sqlite journal " + path_; }

  // -- errors -------------------------------------------------------------------

  /// The error for SQLite result `rc` while doing `what`, naming the file.
  error sqlite_error(int rc, std::string_view what) const {
    std::string detail = std::string{what} + ": " + sqlite3_errmsg(w_.db);
    return sqlite_error(path_, rc, detail);
  }

  static error sqlite_error(const std::string& path, int rc, const std::string& detail) {
    auto prefix = "journal " + path;
    switch (rc & 0xff) {
      case SQLITE_BUSY:
      case SQLITE_LOCKED:
        return unavailable_error(prefix + " is locked by another process (" + detail + ")");
      case SQLITE_NOTADB:
        return data_loss_error(prefix + " is not a database (" + detail + ")");
      case SQLITE_CORRUPT:
        return data_loss_error(prefix + " is corrupt (" + detail + ")");
      case SQLITE_FULL:
        return resource_exhausted_error(prefix + ": disk full (" + detail + ")");
      case SQLITE_NOMEM:
        return resource_exhausted_error(prefix + ": out of memory (" + detail + ")");
      case SQLITE_IOERR:
        return unavailable_error(prefix + ": I/O error (" + detail + ")");
      case SQLITE_READONLY:
      case SQLITE_PERM:
      case SQLITE_AUTH:
        return permission_denied_error(prefix + ": " + detail);
      case SQLITE_CANTOPEN:
        return failed_precondition_error(prefix + " cannot be opened (" + detail + ")");
      default:
        return internal_error(prefix + ": " + detail);
    }
  }

private:
  // -- statements ---------------------------------------------------------------

  expected<sqlite3_stmt*> prepare(sql which, connection* c = nullptr) {
    if (!c)
      c = &w_;
    auto& s = c->stmts[static_cast<size_t>(which)];
    if (!s) {
      int rc = sqlite3_prepare_v3(c->db, sql_text[static_cast<size_t>(which)], -1,
                                  SQLITE_PREPARE_PERSISTENT, &s, nullptr);
      if (rc != SQLITE_OK) {
        auto err =
            sqlite_error(path_, rc, std::string{"preparing a statement: "} + sqlite3_errmsg(c->db));
        sqlite3_finalize(s);
        s = nullptr;
        return err;
      }
    }
    return s;
  }

  /// Runs a statement that returns no rows, with `args` bound to ?1, ?2, ...
  template <class... Args>
  error run(sql which, std::string_view what, const Args&... args) {
    auto s = prepare(which);
    if (!s)
      return s.error();
    stmt_use q{*s};
    q.bind_all(args...);
    if (int rc = q.step(); rc != SQLITE_DONE)
      return sqlite_error(rc, what);
    return {};
  }

  /// How many rows a query hands on.
  enum class rows { first, all };

  /// Runs a query with `args` bound to ?1, ?2, ..., handing its first or all
  /// rows to `take`, which may return an error to stop.
  template <class Take, class... Args>
  error query(sql which, std::string_view what, rows n, Take&& take, const Args&... args) {
    return query_on(w_, which, what, n, take, args...);
  }

  /// `query` on the reader connection (the caller holds rmtx_).
  template <class Take, class... Args>
  error read(sql which, std::string_view what, rows n, Take&& take, const Args&... args) {
    return query_on(r_, which, what, n, take, args...);
  }

  template <class Take, class... Args>
  error query_on(connection& c, sql which, std::string_view what, rows n, Take& take,
                 const Args&... args) {
    auto s = prepare(which, &c);
    if (!s)
      return s.error();
    stmt_use q{*s};
    q.bind_all(args...);
    return each_row(q, what, n, take, c.db);
  }

  /// Steps `q`, handing rows to `take`; the error of a failed step names `what`.
  template <class Take>
  error each_row(stmt_use& q, std::string_view what, rows n, Take& take, sqlite3* db = nullptr) {
    for (;;) {
      int rc = q.step();
      if (rc == SQLITE_DONE)
        return {};
      if (rc != SQLITE_ROW)
        return sqlite_error(path_, rc, std::string{what} + ": " + sqlite3_errmsg(db ? db : w_.db));
      if constexpr (std::is_void_v<std::invoke_result_t<Take&, const stmt_use&>>)
        take(std::as_const(q));
      else if (auto err = take(std::as_const(q)))
        return err;
      if (n == rows::first)
        return {};
    }
  }

  /// Runs one-off SQL (opening, migrations).
  error exec(const std::string& text, std::string_view what) {
    char* msg = nullptr;
    int rc = sqlite3_exec(w_.db, text.c_str(), nullptr, nullptr, &msg);
    if (rc == SQLITE_OK)
      return {};
    std::string detail = std::string{what} + ": " + (msg ? msg : sqlite3_errstr(rc));
    sqlite3_free(msg);
    return sqlite_error(path_, rc, detail);
  }

  /// Runs a one-off query (opening), handing its first or all rows to `take`.
  template <class Take>
  error query_once(const char* text, std::string_view what, rows n, Take&& take) {
    sqlite3_stmt* s = nullptr;
    int rc = sqlite3_prepare_v2(w_.db, text, -1, &s, nullptr);
    std::unique_ptr<sqlite3_stmt, int (*)(sqlite3_stmt*)> owner{s, sqlite3_finalize};
    if (rc != SQLITE_OK)
      return sqlite_error(rc, what);
    stmt_use q{s};
    return each_row(q, what, n, take);
  }

  /// Runs one-off SQL returning one integer.
  error query_int(const char* text, int64_t& out) {
    return query_once(text, text, rows::first, [&](const stmt_use& q) { out = q.int_col(0); });
  }

  static int64_t limit_of(size_t limit) { return limit == 0 ? -1 : clamp_to_int64(limit); }

  static int64_t clamp_to_int64(uint64_t x) {
    return x > static_cast<uint64_t>(INT64_MAX) ? INT64_MAX : static_cast<int64_t>(x);
  }

  // -- opening ------------------------------------------------------------------

  error quick_check() {
    std::string problems;
    auto take = [&](const stmt_use& q) {
      auto line = q.text_col(0);
      if (line == "ok")
        return;
      if (!problems.empty())
        problems += "; ";
      problems += line;
    };
    if (auto err = query_once("PRAGMA quick_check(20)", "quick_check", rows::all, take))
      return err;
    if (!problems.empty())
      return data_loss_error("journal " + path_ + " is corrupt (quick_check: " + problems + ")");
    return {};
  }

  error set_wal() {
    std::string mode;
    auto take = [&](const stmt_use& q) { mode = q.text_col(0); };
    if (auto err = query_once("PRAGMA journal_mode=WAL", "switching to WAL", rows::first, take))
      return err;
    // An in-memory database (":memory:") cannot use WAL and says "memory".
    if (mode != "wal" && mode != "memory")
      return failed_precondition_error("journal " + path_ + " cannot use WAL (journal_mode is "
                                       + mode + ")");
    return {};
  }

  static std::string synchronous_pragma(durability d) {
    switch (d) {
      case durability::normal:
        return "PRAGMA synchronous=NORMAL";
      case durability::off:
        return "PRAGMA synchronous=OFF";
      default:
        return "PRAGMA synchronous=FULL";
    }
  }

  /// Applies the missing migrations in one transaction.
  error migrate(std::span<const detail::sqlite_migration> migrations) {
    if (auto err = exec("BEGIN IMMEDIATE", "migrating"))
      return err;
    auto fail = [&](error err) {
      std::ignore = exec("ROLLBACK", "rolling back a migration");
      return err;
    };
    // Read again under the write lock: another process may have migrated.
    int64_t from = 0;
    if (auto err = query_int("PRAGMA user_version", from))
      return fail(std::move(err));
    int to = static_cast<int>(from);
    for (const auto& m : migrations) {
      if (m.version <= from)
        continue;
      for (size_t i = 0; i < m.steps.size(); ++i) {
        auto what = "migrating to schema version " + std::to_string(m.version) + ", step "
                    + std::to_string(i + 1);
        if (auto err = exec(m.steps[i], what))
          return fail(std::move(err));
      }
      to = m.version;
    }
    // PRAGMAs take no parameters; both values are integers we formatted.
    if (auto err = exec("PRAGMA application_id=" + std::to_string(sqlite_application_id),
                        "setting application_id"))
      return fail(std::move(err));
    if (auto err = exec("PRAGMA user_version=" + std::to_string(to), "setting user_version"))
      return fail(std::move(err));
    if (auto err = exec("COMMIT", "committing a migration"))
      return fail(std::move(err));
    return {};
  }

  // -- rows ---------------------------------------------------------------------

  error bad_row(std::string_view table, const std::string& key, std::string_view column,
                error why) const {
    // A new data_loss node rather than a wrap: the parser's invalid_argument
    // would otherwise show in the text, and the row, not the call, is wrong.
    return data_loss_error("journal " + path_ + ": table " + std::string{table} + ", " + key
                           + ", column " + std::string{column} + ": " + std::string{why.message()});
  }

  expected<error> read_error(const std::string& text, std::string_view table,
                             const std::string& key, std::string_view column) const {
    auto e = error_from_json_string(text);
    if (!e)
      return bad_row(table, key, column, std::move(e).error());
    // A plain keel::error would convert to a failure.
    return expected<error>{std::in_place, std::move(*e)};
  }

  /// Reads a `sagas` row into `r`.
  error read_saga(const stmt_use& q, saga_record& r) const {
    r.id = q.text_col(0);
    auto key = "id " + r.id;
    r.kind = q.text_col(1);
    r.mode = q.text_col(2);
    auto state = q.int_col(3);
    if (state < 0 || state > static_cast<int64_t>(saga_state::needs_intervention))
      return bad_row("sagas", key, "state",
                     invalid_argument_error("unknown saga state " + std::to_string(state)));
    r.state = static_cast<saga_state>(state);
    r.step = static_cast<int32_t>(q.int_col(4));
    auto completed = read_names(q.text_col(5));
    if (!completed)
      return bad_row("sagas", key, "completed", std::move(completed).error());
    r.completed = std::move(*completed);
    r.data = q.text_col(6);
    auto failure = read_error(q.text_col(7), "sagas", key, "failure");
    if (!failure)
      return std::move(failure).error();
    r.failure = std::move(*failure);
    auto comp = read_error(q.text_col(8), "sagas", key, "compensation_failure");
    if (!comp)
      return std::move(comp).error();
    r.compensation_failure = std::move(*comp);
    r.reason = q.text_col(9);
    r.created = q.int_col(10);
    r.updated = q.int_col(11);
    return {};
  }

  static expected<std::vector<std::string>> read_names(const std::string& text) {
    boost::system::error_code ec;
    auto v = json::parse(text, ec);
    if (ec)
      return invalid_argument_error("not JSON: " + ec.message());
    auto arr = v.if_array();
    if (!arr)
      return invalid_argument_error("expected a JSON array of strings");
    std::vector<std::string> names;
    names.reserve(arr->size());
    for (const auto& x : *arr) {
      auto s = x.if_string();
      if (!s)
        return invalid_argument_error("expected a JSON array of strings");
      names.emplace_back(s->data(), s->size());
    }
    return names;
  }

  static std::string write_names(const std::vector<std::string>& names) {
    json::array arr;
    arr.reserve(names.size());
    for (const auto& n : names)
      arr.emplace_back(json::string_view{n.data(), n.size()});
    return json::serialize(arr);
  }

  // -- applying a batch -----------------------------------------------------------

  error apply(const write_batch& batch) {
    for (const auto& op : batch.ops()) {
      auto err = detail::validate(op);
      if (!err)
        err = std::visit([this](const auto& x) { return apply(x); }, op);
      if (err)
        return err;
    }
    return {};
  }

  error apply(const op::put_saga& x) {
    const auto& r = x.record;
    return run(sql::saga_put, "writing saga " + r.id, r.id, r.kind, r.mode,
               static_cast<int64_t>(r.state), int64_t{r.step}, write_names(r.completed), r.data,
               to_json_string(r.failure), to_json_string(r.compensation_failure), r.reason,
               r.created, r.updated);
  }

  error apply(const op::append_event& x) {
    const auto& e = x.event;
    return run(sql::event_put, "appending to stream " + e.stream, e.stream,
               e.at == 0 ? detail::wall_now() : e.at, e.type, e.name, int64_t{e.attempt}, e.detail);
  }

  error apply(const op::put_dlq& x) {
    const auto& e = x.entry;
    return run(sql::dlq_put, "adding to dead-letter queue " + e.queue, e.queue, e.key, e.payload,
               to_json_string(e.failure), int64_t{e.attempts}, e.first_seen, e.last_seen, e.source);
  }

  error apply(const op::remove_dlq& x) {
    return run(sql::dlq_remove, "removing dead-letter entry " + std::to_string(x.id),
               clamp_to_int64(x.id));
  }

  error apply(const op::update_dlq& x) {
    return run(sql::dlq_update, "updating dead-letter entry " + std::to_string(x.id),
               clamp_to_int64(x.id), int64_t{x.attempts}, x.last_seen, to_json_string(x.failure));
  }

  error apply(const op::set_checkpoint& x) {
    return run(sql::checkpoint_put, "setting checkpoint " + x.name, x.name, x.value);
  }

  error apply(const op::mark_processed& x) {
    if (auto err = run(sql::processed_put, "recording processed message " + x.id, x.consumer, x.id,
                       detail::wall_now()))
      return err;
    if (sqlite3_changes(w_.db) == 0)
      return detail::duplicate_error(x.consumer, x.id);
    return {};
  }

  error apply(const op::acquire_lease& x) {
    // The common case (ours, free or expired) is one statement; the holder is
    // only read to explain a refusal.
    if (auto err = run(sql::lease_put, "writing lease " + x.name, x.name, x.owner, x.now + x.ttl_ms,
                       x.now))
      return err;
    if (sqlite3_changes(w_.db) > 0)
      return {};
    auto take = [&](const stmt_use& q) -> error {
      auto holder = q.text_col(0);
      auto expires = q.int_col(1);
      if (!detail::may_take_lease(x, holder, expires))
        return detail::lease_held_error(x, holder, expires);
      return internal_error("journal " + path_ + ": lease " + x.name + " was not written");
    };
    return query(sql::lease_get, "reading lease " + x.name, rows::first, take, x.name);
  }

  error apply(const op::release_lease& x) {
    return run(sql::lease_remove, "releasing lease " + x.name, x.name, x.owner);
  }

  std::string path_;
  std::mutex mtx_;  // the writer connection
  std::mutex rmtx_; // the reader connection
  connection w_;
  connection r_;
};

} // namespace

namespace detail {

expected<std::shared_ptr<journal>>
open_sqlite_journal_with(const std::string& path, const sqlite_options& opts,
                         std::span<const sqlite_migration> migrations) {
  std::error_code ec;
  if (!opts.create && !std::filesystem::exists(path, ec))
    return not_found_error("journal " + path + " does not exist");
  int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | (opts.create ? SQLITE_OPEN_CREATE : 0);
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, flags, nullptr);
  // Even a failed open may allocate a handle; the journal owns and closes it.
  auto j = std::make_shared<sqlite_journal>(path, db);
  if (rc != SQLITE_OK)
    return sqlite_journal::sqlite_error(
        path, rc, std::string{"opening: "} + (db ? sqlite3_errmsg(db) : sqlite3_errstr(rc)));
  if (auto err = j->init(opts, migrations))
    return err;
  if (auto err = j->open_reader(opts))
    return err;
  return std::shared_ptr<journal>{std::move(j)};
}

} // namespace detail

expected<std::shared_ptr<journal>> open_sqlite_journal(const std::string& path,
                                                       const sqlite_options& opts) {
  // sqlite_migrations().back().version == sqlite_schema_version (a test checks).
  return detail::open_sqlite_journal_with(path, opts, detail::sqlite_migrations());
}

} // namespace keel::store
