#pragma once

// Shared by the store tests: a temporary directory per test, raw SQLite
// access (to tamper with files the way other processes or disks do), and
// sample records.

#include "keel/error.hpp"
#include "keel/store/journal.hpp"
#include "keel/store/memory_journal.hpp"
#include "keel/store/sqlite_journal.hpp"

#include <gtest/gtest.h>

#include <sqlite3.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <type_traits>
#include <unistd.h>

namespace keel_test {

namespace fs = std::filesystem;

/// A fresh directory under the system's temp directory, named after the
/// running test, removed with everything in it at the end of the scope.
class temp_dir {
public:
  temp_dir() {
    static std::atomic<int> counter{0};
    std::string name = "keel-store";
    if (auto* info = ::testing::UnitTest::GetInstance()->current_test_info())
      name += std::string{"-"} + info->test_suite_name() + "-" + info->name();
    for (auto& c : name)
      if (c == '/')
        c = '_';
    name += "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
    path_ = fs::temp_directory_path() / name;
    fs::remove_all(path_);
    fs::create_directories(path_);
  }

  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;

  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }

  const fs::path& path() const noexcept { return path_; }

  /// A file name inside the directory.
  std::string file(const std::string& name) const { return (path_ / name).string(); }

private:
  fs::path path_;
};

/// Options for test journals: no fsync (the tests do not pull the plug).
inline keel::store::sqlite_options fast_options() {
  keel::store::sqlite_options opts;
  opts.level = keel::store::durability::off;
  return opts;
}

// -- the journals typed suites run against ------------------------------------

/// Opens a fresh in-memory journal.
struct memory_kind {
  static std::shared_ptr<keel::store::journal> open(const temp_dir&) {
    return keel::store::make_memory_journal();
  }
};

/// Opens a fresh SQLite journal in `dir` (nullptr, after a test failure, when
/// that fails).
struct sqlite_kind {
  static std::shared_ptr<keel::store::journal> open(const temp_dir& dir) {
    auto j = keel::store::open_sqlite_journal(dir.file("test.journal"), fast_options());
    if (!j) {
      ADD_FAILURE() << j.error();
      return nullptr;
    }
    return *j;
  }
};

/// Names typed tests after the journal: `.../Memory`, `.../Sqlite`.
struct kind_names {
  template <class T>
  static std::string GetName(int) {
    return std::is_same_v<T, memory_kind> ? "Memory" : "Sqlite";
  }
};

using journal_kinds = ::testing::Types<memory_kind, sqlite_kind>;

/// A raw SQLite connection, as another process would have.
class raw_db {
public:
  explicit raw_db(const std::string& path) {
    if (sqlite3_open(path.c_str(), &db_) != SQLITE_OK)
      ADD_FAILURE() << "cannot open " << path << ": " << sqlite3_errmsg(db_);
  }

  raw_db(const raw_db&) = delete;
  raw_db& operator=(const raw_db&) = delete;

  ~raw_db() { sqlite3_close(db_); }

  /// Runs `sql`; returns SQLite's result code.
  int exec(const std::string& sql) {
    char* msg = nullptr;
    int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &msg);
    if (msg)
      last_error_ = msg;
    sqlite3_free(msg);
    return rc;
  }

  /// The first column of the first row of `sql`, as an integer.
  int64_t query_int(const std::string& sql) {
    sqlite3_stmt* s = nullptr;
    int64_t result = -1;
    if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &s, nullptr) == SQLITE_OK
        && sqlite3_step(s) == SQLITE_ROW)
      result = sqlite3_column_int64(s, 0);
    else
      ADD_FAILURE() << sql << ": " << sqlite3_errmsg(db_);
    sqlite3_finalize(s);
    return result;
  }

  /// The first column of the first row of `sql`, as text.
  std::string query_text(const std::string& sql) {
    sqlite3_stmt* s = nullptr;
    std::string result;
    if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &s, nullptr) == SQLITE_OK
        && sqlite3_step(s) == SQLITE_ROW) {
      if (auto p = sqlite3_column_text(s, 0))
        result = reinterpret_cast<const char*>(p);
    } else {
      ADD_FAILURE() << sql << ": " << sqlite3_errmsg(db_);
    }
    sqlite3_finalize(s);
    return result;
  }

  const std::string& last_error() const noexcept { return last_error_; }

private:
  sqlite3* db_ = nullptr;
  std::string last_error_;
};

/// The bytes of a file.
inline std::string file_bytes(const std::string& path) {
  std::ifstream in{path, std::ios::binary};
  return {std::istreambuf_iterator<char>{in}, std::istreambuf_iterator<char>{}};
}

/// A saga record with every field set.
inline keel::store::saga_record sample_saga(const std::string& id,
                                            keel::saga_state state = keel::saga_state::running,
                                            const std::string& kind = "payment") {
  keel::store::saga_record r;
  r.id = id;
  r.kind = kind;
  r.mode = "orchestrated";
  r.state = state;
  r.step = 2;
  r.completed = {"reserve", "charge \"card\""};
  r.data = R"({"amount": 42, "currency": "EUR", "note": "caf\u00e9"})";
  r.failure = keel::wrap(keel::unavailable_error("bank down"), "step charge");
  r.compensation_failure = keel::join(keel::internal_error("refund failed"),
                                      keel::deadline_exceeded_error("release timed out"));
  r.reason = "compensator refund exhausted its retries";
  r.created = 1'700'000'000'000;
  r.updated = 1'700'000'000'500;
  return r;
}

/// A dead-letter entry with every field set (id left to the journal).
inline keel::store::dlq_entry sample_dlq(const std::string& queue, const std::string& key,
                                         uint32_t attempts = 3) {
  keel::store::dlq_entry e;
  e.queue = queue;
  e.key = key;
  e.payload = R"({"order": ")" + key + R"("})";
  e.failure = keel::with_detail(keel::invalid_argument_error("bad amount"),
                                keel::stage_info{"parse", key, attempts});
  e.attempts = attempts;
  e.first_seen = 1000;
  e.last_seen = 2000;
  e.source = "parse";
  return e;
}

} // namespace keel_test
