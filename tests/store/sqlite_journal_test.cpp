// What only the SQLite journal has: a file that outlives the process, its
// schema version and application_id, and the ways a file can be wrong
// (foreign, newer, corrupt, truncated, locked). Opening never changes a file
// it refuses, and no failure loses what was committed before.

#include "helpers.hpp"

#include "keel/store/detail/sqlite_migrations.hpp"
#include "keel/testing/matchers.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace {

using namespace keel::store;
using keel::saga_state;
using keel::testing::FailedWith;
using keel::testing::IsOk;
using ::testing::AllOf;
using ::testing::HasSubstr;

class SqliteJournal : public ::testing::Test {
protected:
  std::shared_ptr<journal> open_ok(const std::string& path,
                                   sqlite_options opts = keel_test::fast_options()) {
    auto j = open_sqlite_journal(path, opts);
    EXPECT_THAT(j, IsOk());
    return j ? *j : nullptr;
  }

  /// A closed journal at `path` holding saga "s1", two events and a checkpoint.
  void make_journal(const std::string& path) {
    auto j = open_ok(path);
    ASSERT_NE(j, nullptr);
    ASSERT_THAT(j->commit(write_batch{}
                              .put_saga(keel_test::sample_saga("s1"))
                              .append_event("saga/s1", "step_started")
                              .append_event("saga/s1", "step_completed")
                              .set_checkpoint("cp", "7")),
                IsOk());
  }

  /// Checks that `j` holds what `make_journal` wrote.
  void expect_journal_data(journal& j) {
    auto s = j.saga("s1");
    ASSERT_THAT(s, IsOk());
    ASSERT_TRUE(s->has_value());
    EXPECT_EQ(**s, keel_test::sample_saga("s1"));
    EXPECT_EQ(j.events("saga/s1")->size(), 2u);
    EXPECT_EQ(j.checkpoint("cp").value(), "7");
  }

  static std::string to_text(const keel::error& err) { return keel::to_string(err); }

  keel_test::temp_dir dir;
};

// -- the file --------------------------------------------------------------------

TEST_F(SqliteJournal, ReopenKeepsEverything) {
  auto path = dir.file("orders.journal");
  {
    sqlite_options opts;
    opts.level = durability::full;
    auto j = open_ok(path, opts);
    ASSERT_NE(j, nullptr);
    ASSERT_THAT(j->commit(write_batch{}
                              .put_saga(keel_test::sample_saga("s1"))
                              .append_event("saga/s1", "step_started")
                              .append_event("saga/s1", "step_completed")
                              .set_checkpoint("cp", "7")
                              .put_dlq(keel_test::sample_dlq("q", "k"))
                              .mark_processed("c", "m")
                              .acquire_lease("l", "o", 1, 1000)),
                IsOk());
  }
  auto j = open_ok(path);
  ASSERT_NE(j, nullptr);
  expect_journal_data(*j);
  EXPECT_EQ(j->dlq()->size(), 1u);
  EXPECT_TRUE(j->processed("c", "m").value());
  EXPECT_EQ(j->lease("l").value(), (lease_record{"l", "o", 1001}));
  // Sequence numbers and dead-letter ids continue where they were.
  ASSERT_THAT(j->commit(write_batch{}
                            .append_event("saga/s1", "step_started")
                            .put_dlq(keel_test::sample_dlq("q", "k2"))),
              IsOk());
  EXPECT_EQ(j->events("saga/s1", 2)->at(0).seq, 3u);
  EXPECT_EQ(j->dlq()->back().id, 2u);
}

TEST_F(SqliteJournal, NewFileIsMarkedAsKeelJournal) {
  auto path = dir.file("new.journal");
  make_journal(path);
  keel_test::raw_db raw{path};
  EXPECT_EQ(raw.query_int("PRAGMA application_id"), sqlite_application_id);
  EXPECT_EQ(raw.query_int("PRAGMA user_version"), sqlite_schema_version);
  EXPECT_EQ(raw.query_text("PRAGMA journal_mode"), "wal");
  EXPECT_EQ(raw.query_int("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN"
                          " ('sagas', 'events', 'dlq', 'checkpoints', 'processed', 'leases')"),
            6);
}

TEST_F(SqliteJournal, DescribeNamesTheFile) {
  auto path = dir.file("d.journal");
  auto j = open_ok(path);
  ASSERT_NE(j, nullptr);
  EXPECT_EQ(j->describe(), "sqlite journal " + path);
  EXPECT_EQ(to_string(durability::full), "full");
  EXPECT_EQ(to_string(durability::normal), "normal");
  EXPECT_EQ(to_string(durability::off), "off");
}

TEST_F(SqliteJournal, EveryDurabilityLevelOpensAndCommits) {
  for (auto level : {durability::full, durability::normal, durability::off}) {
    auto path = dir.file(std::string{to_string(level)} + ".journal");
    sqlite_options opts;
    opts.level = level;
    {
      auto j = open_ok(path, opts);
      ASSERT_NE(j, nullptr);
      ASSERT_THAT(j->commit(write_batch{}.set_checkpoint("x", "1")), IsOk());
    }
    auto j = open_ok(path, opts);
    ASSERT_NE(j, nullptr);
    EXPECT_EQ(j->checkpoint("x").value(), "1");
  }
}

TEST_F(SqliteJournal, MissingFileWithoutCreateIsNotFound) {
  auto path = dir.file("missing.journal");
  auto opts = keel_test::fast_options();
  opts.create = false;
  auto j = open_sqlite_journal(path, opts);
  EXPECT_THAT(j, FailedWith(keel::code::not_found));
  EXPECT_THAT(to_text(j.error()), HasSubstr(path));
  EXPECT_FALSE(keel_test::fs::exists(path));
}

TEST_F(SqliteJournal, DirectoryThatDoesNotExistNamesThePath) {
  auto path = dir.file("no/such/dir.journal");
  auto j = open_sqlite_journal(path, keel_test::fast_options());
  EXPECT_FALSE(j.has_value());
  EXPECT_THAT(to_text(j.error()), HasSubstr(path));
}

// -- files it refuses ----------------------------------------------------------------

TEST_F(SqliteJournal, NewerSchemaIsRefusedAndLeftUnchanged) {
  auto path = dir.file("newer.journal");
  make_journal(path);
  {
    keel_test::raw_db raw{path};
    ASSERT_EQ(raw.exec("PRAGMA user_version = 99"), SQLITE_OK);
  }
  auto before = keel_test::file_bytes(path);
  auto j = open_sqlite_journal(path, keel_test::fast_options());
  EXPECT_THAT(j, FailedWith(keel::code::failed_precondition));
  EXPECT_THAT(
      to_text(j.error()),
      HasSubstr("journal " + path + " has schema version 99, newer than this keel supports (1)"));
  EXPECT_EQ(keel_test::file_bytes(path), before);
  keel_test::raw_db raw{path};
  EXPECT_EQ(raw.query_int("PRAGMA user_version"), 99);
}

TEST_F(SqliteJournal, ForeignDatabaseIsRefusedAndLeftUnchanged) {
  auto path = dir.file("crm.db");
  {
    keel_test::raw_db raw{path};
    ASSERT_EQ(raw.exec("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT);"
                       "INSERT INTO customers (name) VALUES ('Ada');"),
              SQLITE_OK);
  }
  auto before = keel_test::file_bytes(path);
  auto j = open_sqlite_journal(path, keel_test::fast_options());
  EXPECT_THAT(j, FailedWith(keel::code::failed_precondition));
  EXPECT_THAT(to_text(j.error()), AllOf(HasSubstr(path), HasSubstr("not a keel journal")));
  EXPECT_EQ(keel_test::file_bytes(path), before);
  EXPECT_FALSE(keel_test::fs::exists(path + "-wal"));
  keel_test::raw_db raw{path};
  EXPECT_EQ(raw.query_text("PRAGMA journal_mode"), "delete");
  EXPECT_EQ(raw.query_int("SELECT count(*) FROM sqlite_master"), 1);
}

TEST_F(SqliteJournal, OtherApplicationIdIsRefusedEvenWithoutTables) {
  auto path = dir.file("other.db");
  {
    keel_test::raw_db raw{path};
    ASSERT_EQ(raw.exec("PRAGMA application_id = 1234"), SQLITE_OK);
  }
  auto before = keel_test::file_bytes(path);
  auto j = open_sqlite_journal(path, keel_test::fast_options());
  EXPECT_THAT(j, FailedWith(keel::code::failed_precondition));
  EXPECT_THAT(to_text(j.error()), AllOf(HasSubstr(path), HasSubstr("not a keel journal")));
  EXPECT_EQ(keel_test::file_bytes(path), before);
}

TEST_F(SqliteJournal, GarbageFileIsDataLoss) {
  auto path = dir.file("garbage.journal");
  {
    std::ofstream out{path, std::ios::binary};
    for (int i = 0; i < 512; ++i)
      out << "this is not a database, just text #" << i << '\n';
  }
  auto before = keel_test::file_bytes(path);
  for (bool check : {true, false}) {
    auto opts = keel_test::fast_options();
    opts.check_on_open = check;
    auto j = open_sqlite_journal(path, opts);
    EXPECT_THAT(j, FailedWith(keel::code::data_loss));
    EXPECT_THAT(to_text(j.error()), AllOf(HasSubstr(path), HasSubstr("not a database")));
  }
  EXPECT_EQ(keel_test::file_bytes(path), before);
}

TEST_F(SqliteJournal, TruncatedJournalIsDataLoss) {
  auto original = dir.file("full.journal");
  {
    auto j = open_ok(original);
    ASSERT_NE(j, nullptr);
    write_batch b;
    for (int i = 0; i < 300; ++i) {
      auto r = keel_test::sample_saga("saga-" + std::to_string(i));
      r.data = R"({"blob": ")" + std::string(2000, static_cast<char>('a' + i % 26)) + R"("})";
      b.put_saga(std::move(r)).append_event("saga/" + std::to_string(i), "step_started");
    }
    ASSERT_THAT(j->commit(b), IsOk());
  }
  auto path = dir.file("truncated.journal");
  keel_test::fs::copy_file(original, path);
  keel_test::fs::resize_file(path, keel_test::fs::file_size(path) / 2);
  auto j = open_sqlite_journal(path, keel_test::fast_options());
  EXPECT_THAT(j, FailedWith(keel::code::data_loss));
  EXPECT_THAT(to_text(j.error()), HasSubstr(path));
  // Without the check on open, reads find the damage instead of crashing.
  auto opts = keel_test::fast_options();
  opts.check_on_open = false;
  auto unchecked = open_sqlite_journal(path, opts);
  if (unchecked) {
    auto all = (*unchecked)->sagas();
    EXPECT_THAT(all, FailedWith(keel::code::data_loss));
    EXPECT_THAT(to_text(all.error()), HasSubstr(path));
  } else {
    EXPECT_THAT(unchecked, FailedWith(keel::code::data_loss));
  }
}

// -- locks -----------------------------------------------------------------------

TEST_F(SqliteJournal, LockedByAnotherProcessIsUnavailableAndLosesNothing) {
  auto path = dir.file("locked.journal");
  make_journal(path);
  auto opts = keel_test::fast_options();
  opts.busy_timeout = std::chrono::milliseconds(50);
  auto j = open_ok(path, opts);
  ASSERT_NE(j, nullptr);
  keel_test::raw_db other{path};
  ASSERT_EQ(other.exec("BEGIN EXCLUSIVE"), SQLITE_OK) << other.last_error();
  auto r = j->commit(write_batch{}.set_checkpoint("cp", "8"));
  EXPECT_THAT(r, FailedWith(keel::code::unavailable));
  EXPECT_THAT(to_text(r.error()), HasSubstr("journal " + path + " is locked by another process"));
  // A group fails as a whole.
  write_batch b1, b2;
  b1.put_saga(keel_test::sample_saga("s2"));
  b2.append_event("saga/s1", "step_started");
  const write_batch* group[] = {&b1, &b2};
  auto errs = j->commit_group(group);
  ASSERT_EQ(errs.size(), 2u);
  EXPECT_THAT(errs[0], FailedWith(keel::code::unavailable));
  EXPECT_THAT(errs[1], FailedWith(keel::code::unavailable));
  // WAL readers are not blocked by the writer lock.
  expect_journal_data(*j);
  ASSERT_EQ(other.exec("ROLLBACK"), SQLITE_OK);
  // The lock is gone: commits work again and nothing was lost.
  EXPECT_THAT(j->commit(write_batch{}.put_saga(keel_test::sample_saga("s2"))), IsOk());
  expect_journal_data(*j);
  EXPECT_EQ(j->sagas()->size(), 2u);
}

// -- migrations ------------------------------------------------------------------

TEST_F(SqliteJournal, MigrationListEndsAtTheSchemaVersion) {
  auto list = detail::sqlite_migrations();
  ASSERT_FALSE(list.empty());
  EXPECT_EQ(list.front().version, 1);
  EXPECT_EQ(list.back().version, sqlite_schema_version);
  for (size_t i = 1; i < list.size(); ++i)
    EXPECT_EQ(list[i].version, list[i - 1].version + 1);
}

TEST_F(SqliteJournal, CurrentVersionNeedsNoMigration) {
  auto path = dir.file("v1.journal");
  make_journal(path);
  auto j = detail::open_sqlite_journal_with(path, keel_test::fast_options(),
                                            detail::sqlite_migrations());
  ASSERT_THAT(j, IsOk());
  expect_journal_data(**j);
  j = keel::expected<std::shared_ptr<journal>>{};
  keel_test::raw_db raw{path};
  EXPECT_EQ(raw.query_int("PRAGMA user_version"), 1);
}

// A future keel's migration to version 2, as the next entry of the list.
std::vector<detail::sqlite_migration> with_v2(std::vector<std::string> steps) {
  auto base = detail::sqlite_migrations();
  std::vector<detail::sqlite_migration> list{base.begin(), base.end()};
  list.push_back({2, std::move(steps)});
  return list;
}

TEST_F(SqliteJournal, MigrationAppliesMissingVersions) {
  auto path = dir.file("migrate.journal");
  make_journal(path);
  auto v2 = with_v2({"ALTER TABLE sagas ADD COLUMN tenant TEXT NOT NULL DEFAULT ''",
                     "CREATE TABLE bus_offsets (name TEXT PRIMARY KEY, pos INTEGER)"});
  {
    auto j = detail::open_sqlite_journal_with(path, keel_test::fast_options(), v2);
    ASSERT_THAT(j, IsOk());
    expect_journal_data(**j);
    EXPECT_THAT((*j)->commit(write_batch{}.put_saga(keel_test::sample_saga("s2"))), IsOk());
  }
  {
    keel_test::raw_db raw{path};
    EXPECT_EQ(raw.query_int("PRAGMA user_version"), 2);
    EXPECT_EQ(raw.query_int("SELECT count(*) FROM sagas WHERE tenant = ''"), 2);
    EXPECT_EQ(raw.query_int("SELECT count(*) FROM bus_offsets"), 0);
  }
  // Reopening at version 2 migrates nothing; this keel (version 1) refuses it.
  EXPECT_THAT(detail::open_sqlite_journal_with(path, keel_test::fast_options(), v2), IsOk());
  auto old = open_sqlite_journal(path, keel_test::fast_options());
  EXPECT_THAT(old, FailedWith(keel::code::failed_precondition));
  EXPECT_THAT(to_text(old.error()), HasSubstr("has schema version 2, newer than this keel"
                                              " supports (1)"));
}

TEST_F(SqliteJournal, MigrationFromNothingCreatesEveryVersion) {
  auto path = dir.file("fresh.journal");
  auto v2 = with_v2({"CREATE TABLE bus_offsets (name TEXT PRIMARY KEY, pos INTEGER)"});
  {
    auto j = detail::open_sqlite_journal_with(path, keel_test::fast_options(), v2);
    ASSERT_THAT(j, IsOk());
  }
  keel_test::raw_db raw{path};
  EXPECT_EQ(raw.query_int("PRAGMA user_version"), 2);
  EXPECT_EQ(raw.query_int("PRAGMA application_id"), sqlite_application_id);
  EXPECT_EQ(raw.query_int("SELECT count(*) FROM sagas"), 0);
  EXPECT_EQ(raw.query_int("SELECT count(*) FROM bus_offsets"), 0);
}

TEST_F(SqliteJournal, FailingMigrationLeavesTheOldVersion) {
  auto path = dir.file("bad-migration.journal");
  make_journal(path);
  auto v2 = with_v2({"CREATE TABLE bus_offsets (name TEXT PRIMARY KEY, pos INTEGER)",
                     "ALTER TABLE no_such_table ADD COLUMN x"});
  auto j = detail::open_sqlite_journal_with(path, keel_test::fast_options(), v2);
  EXPECT_FALSE(j.has_value());
  EXPECT_THAT(to_text(j.error()),
              AllOf(HasSubstr(path), HasSubstr("schema version 2, step 2"), HasSubstr("no_such")));
  {
    keel_test::raw_db raw{path};
    EXPECT_EQ(raw.query_int("PRAGMA user_version"), 1);
    EXPECT_EQ(raw.query_int("SELECT count(*) FROM sqlite_master WHERE name = 'bus_offsets'"), 0);
  }
  auto again = open_ok(path);
  ASSERT_NE(again, nullptr);
  expect_journal_data(*again);
}

// -- bad rows --------------------------------------------------------------------

TEST_F(SqliteJournal, BadJsonInARowIsDataLoss) {
  auto path = dir.file("bad-json.journal");
  {
    auto j = open_ok(path);
    ASSERT_NE(j, nullptr);
    ASSERT_THAT(j->commit(write_batch{}
                              .put_saga(keel_test::sample_saga("good"))
                              .put_saga(keel_test::sample_saga("bad-completed"))
                              .put_saga(keel_test::sample_saga("bad-failure"))
                              .put_saga(keel_test::sample_saga("bad-state"))
                              .put_dlq(keel_test::sample_dlq("q", "k"))),
                IsOk());
  }
  {
    keel_test::raw_db raw{path};
    ASSERT_EQ(raw.exec("UPDATE sagas SET completed = '[\"reserve\", ' WHERE id = 'bad-completed';"
                       "UPDATE sagas SET failure = '{\"code\": 42}' WHERE id = 'bad-failure';"
                       "UPDATE sagas SET state = 42 WHERE id = 'bad-state';"
                       "UPDATE dlq SET failure = 'not json';"),
              SQLITE_OK)
        << raw.last_error();
  }
  auto j = open_ok(path);
  ASSERT_NE(j, nullptr);
  EXPECT_THAT(j->saga("good"), IsOk());
  auto expect_bad = [&](const auto& result, const std::string& table, const std::string& key,
                        const std::string& column) {
    EXPECT_THAT(result, FailedWith(keel::code::data_loss));
    EXPECT_THAT(to_text(result.error()), AllOf(HasSubstr(path), HasSubstr("table " + table),
                                               HasSubstr(key), HasSubstr("column " + column)));
  };
  expect_bad(j->saga("bad-completed"), "sagas", "bad-completed", "completed");
  expect_bad(j->saga("bad-failure"), "sagas", "bad-failure", "failure");
  expect_bad(j->saga("bad-state"), "sagas", "bad-state", "state");
  EXPECT_THAT(j->sagas(), FailedWith(keel::code::data_loss));
  // Queries that do not reach the bad rows still work.
  EXPECT_THAT(j->sagas({.state = saga_state::compensating}), IsOk());
  expect_bad(j->dlq(), "dlq", "id 1", "failure");
}

} // namespace
