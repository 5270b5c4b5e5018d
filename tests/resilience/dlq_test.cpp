// The persistent dead-letter queue, on both journals: put / list / show,
// order per key, replay (success, failure, dry run, limit), purge, and
// replays passing a consumer's dedup.

#include "keel/resilience/codes.hpp"
#include "keel/resilience/dlq.hpp"
#include "keel/store/memory_journal.hpp"
#include "keel/store/sqlite_journal.hpp"
#include "keel/testing/matchers.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <memory>
#include <string>
#include <type_traits>
#include <unistd.h>
#include <vector>

namespace {

namespace fs = std::filesystem;
using keel::dead_letter_queue;
using keel::dlq_replay_item;
using keel::store::dlq_entry;
using keel::store::write_batch;
using keel::testing::FailedWith;
using keel::testing::IsOk;

// -- the journals the suite runs against ----------------------------------------

struct memory_kind {
  static std::shared_ptr<keel::store::journal> open(const fs::path&) {
    return keel::store::make_memory_journal();
  }
};

struct sqlite_kind {
  static std::shared_ptr<keel::store::journal> open(const fs::path& dir) {
    keel::store::sqlite_options opts;
    opts.level = keel::store::durability::off; // no power cuts in these tests
    auto j = keel::store::open_sqlite_journal((dir / "dlq.journal").string(), opts);
    if (!j) {
      ADD_FAILURE() << j.error();
      return nullptr;
    }
    return *j;
  }
};

struct kind_names {
  template <class T>
  static std::string GetName(int) {
    return std::is_same_v<T, memory_kind> ? "Memory" : "Sqlite";
  }
};

template <class Kind>
class DeadLetterQueue : public ::testing::Test {
protected:
  DeadLetterQueue() {
    static std::atomic<int> counter{0};
    dir = fs::temp_directory_path()
          / ("keel-dlq-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    fs::remove_all(dir);
    fs::create_directories(dir);
    journal = Kind::open(dir);
    dlq = std::make_unique<dead_letter_queue>(journal, "orders",
                                              keel::dlq_options{[this] { return clock.load(); }});
  }

  ~DeadLetterQueue() override {
    dlq.reset();
    journal.reset();
    std::error_code ec;
    fs::remove_all(dir, ec);
  }

  /// Puts an entry; `what` ends up in the payload.
  void put(const std::string& key, const std::string& what, keel::error err = {},
           const std::string& source = "charge") {
    dlq_entry e;
    e.key = key;
    e.payload = R"({"what":")" + what + R"("})";
    e.failure = err ? err : keel::unavailable_error("payment gateway down");
    e.source = source;
    ASSERT_THAT(dlq->put(std::move(e)), IsOk());
  }

  /// Ids of `xs`.
  static std::vector<uint64_t> ids(const std::vector<dlq_entry>& xs) {
    std::vector<uint64_t> result;
    for (const auto& x : xs)
      result.push_back(x.id);
    return result;
  }

  /// Ids of the queue's entries, oldest first.
  std::vector<uint64_t> all_ids() {
    auto xs = dlq->list();
    EXPECT_THAT(xs, IsOk());
    return xs ? ids(*xs) : std::vector<uint64_t>{};
  }

  fs::path dir;
  std::atomic<keel::store::unix_ms> clock{1000};
  std::shared_ptr<keel::store::journal> journal;
  std::unique_ptr<dead_letter_queue> dlq;
};

using journal_kinds = ::testing::Types<memory_kind, sqlite_kind>;
TYPED_TEST_SUITE(DeadLetterQueue, journal_kinds, kind_names);

TYPED_TEST(DeadLetterQueue, PutListShow) {
  ASSERT_TRUE(this->journal);
  this->put("k1", "a");
  this->clock = 2000;
  dlq_entry e;
  e.key = "k2";
  e.payload = "[1,2]";
  e.failure = keel::wrap(keel::make_error(keel::resilience_code::circuit_open, "open"), "call");
  e.attempts = 3;
  e.first_seen = 1500;
  e.source = "enrich";
  ASSERT_THAT(this->dlq->put(e), IsOk());
  auto all = this->dlq->list();
  ASSERT_THAT(all, IsOk());
  ASSERT_EQ(all->size(), 2u);
  const auto& a = (*all)[0];
  EXPECT_EQ(a.queue, "orders");
  EXPECT_EQ(a.key, "k1");
  EXPECT_EQ(a.attempts, 1u) << "defaults to one attempt";
  EXPECT_EQ(a.first_seen, 1000);
  EXPECT_EQ(a.last_seen, 1000);
  EXPECT_EQ(a.source, "charge");
  const auto& b = (*all)[1];
  EXPECT_EQ(b.attempts, 3u);
  EXPECT_EQ(b.first_seen, 1500);
  EXPECT_EQ(b.last_seen, 1500) << "never before first_seen";
  EXPECT_EQ(b.payload, "[1,2]");
  EXPECT_TRUE(keel::is(b.failure, keel::resilience_code::circuit_open)) << b.failure;
  EXPECT_EQ(b.failure, e.failure) << "the error chain survives the journal";
  auto shown = this->dlq->show(b.id);
  ASSERT_THAT(shown, IsOk());
  EXPECT_EQ(*shown, b);
  EXPECT_THAT(this->dlq->show(b.id + 100), FailedWith(keel::code::not_found));
  EXPECT_EQ(*this->dlq->size(), 2u);
  // Another queue on the same journal is separate.
  dead_letter_queue other{this->journal, "refunds"};
  EXPECT_EQ(*other.size(), 0u);
  EXPECT_THAT(other.show(b.id), FailedWith(keel::code::not_found));
}

TYPED_TEST(DeadLetterQueue, PutRejectsPayloadThatIsNotJson) {
  ASSERT_TRUE(this->journal);
  dlq_entry e;
  e.key = "k";
  e.payload = "{not json";
  EXPECT_THAT(this->dlq->put(e), FailedWith(keel::code::invalid_argument));
  e.payload.clear(); // empty means null
  EXPECT_THAT(this->dlq->put(e), IsOk());
  EXPECT_EQ(this->dlq->list()->at(0).payload, "null");
}

TYPED_TEST(DeadLetterQueue, PutIntoBatchCommitsWithOtherWork) {
  ASSERT_TRUE(this->journal);
  write_batch b;
  dlq_entry e;
  e.key = "k";
  ASSERT_THAT(this->dlq->put(b, e), IsOk());
  b.mark_processed("importer", "m1").mark_processed("importer", "m1"); // the batch fails
  EXPECT_THAT(this->journal->commit(b), FailedWith(keel::code::already_exists));
  EXPECT_EQ(*this->dlq->size(), 0u) << "atomic with the batch";
}

TYPED_TEST(DeadLetterQueue, ListKeepsOrderPerKeyAndFilters) {
  ASSERT_TRUE(this->journal);
  this->put("k1", "first");
  this->put("k2", "other", keel::make_error(keel::resilience_code::rate_limited, "no token"),
            "enrich");
  this->put("k1", "second");
  this->put("k1", "third", keel::invalid_argument_error("bad row"), "parse");
  auto k1 = this->dlq->list({.key = "k1"});
  ASSERT_THAT(k1, IsOk());
  ASSERT_EQ(k1->size(), 3u);
  EXPECT_EQ((*k1)[0].payload, R"({"what":"first"})");
  EXPECT_EQ((*k1)[1].payload, R"({"what":"second"})");
  EXPECT_EQ((*k1)[2].payload, R"({"what":"third"})");
  EXPECT_LT((*k1)[0].id, (*k1)[1].id);
  EXPECT_EQ(this->dlq->list({.source = "enrich"})->size(), 1u);
  // Codes: by name, qualified name, or canonical code.
  EXPECT_EQ(this->dlq->list({.code = "rate_limited"})->size(), 1u);
  EXPECT_EQ(this->dlq->list({.code = "keel.resilience.rate_limited"})->size(), 1u);
  EXPECT_EQ(this->dlq->list({.code = "resource_exhausted"})->size(), 1u);
  EXPECT_EQ(this->dlq->list({.code = "unavailable"})->size(), 2u);
  EXPECT_EQ(this->dlq->list({.code = "circuit_open"})->size(), 0u);
  EXPECT_EQ(this->dlq->list({.key = "k1", .code = "unavailable"})->size(), 2u);
  auto two = this->dlq->list({.key = "k1", .limit = 2});
  EXPECT_EQ(this->ids(*two), (std::vector<uint64_t>{(*k1)[0].id, (*k1)[1].id}));
}

TYPED_TEST(DeadLetterQueue, ReplaySuccessRemovesInOrder) {
  ASSERT_TRUE(this->journal);
  this->put("k1", "a");
  this->put("k2", "b");
  this->put("k1", "c");
  auto before = this->all_ids();
  std::vector<std::string> seen;
  std::vector<std::string> message_ids;
  auto rep =
      this->dlq->replay({.all = true}, [&](const dlq_replay_item& x) -> keel::expected<void> {
        seen.push_back(x.entry.payload);
        message_ids.push_back(x.message_id);
        EXPECT_EQ(x.attempt, 2u);
        EXPECT_EQ(x.entry.queue, "orders");
        return {};
      });
  ASSERT_THAT(rep, IsOk());
  EXPECT_FALSE(rep->error) << rep->error;
  EXPECT_EQ(rep->replayed, before);
  EXPECT_TRUE(rep->failed.empty());
  EXPECT_TRUE(rep->held.empty());
  EXPECT_EQ(seen,
            (std::vector<std::string>{R"({"what":"a"})", R"({"what":"b"})", R"({"what":"c"})"}));
  EXPECT_EQ(message_ids[0], "k1#dlq-" + std::to_string(before[0]));
  EXPECT_EQ(*this->dlq->size(), 0u);
}

TYPED_TEST(DeadLetterQueue, ReplayFailureHoldsTheKeyAndUpdatesTheEntry) {
  ASSERT_TRUE(this->journal);
  this->put("k1", "a");
  this->put("k2", "b");
  this->put("k1", "c");
  this->put("k2", "d");
  auto before = this->all_ids(); // a, b, c, d
  this->clock = 5000;
  std::vector<std::string> seen;
  auto rep =
      this->dlq->replay({.all = true}, [&](const dlq_replay_item& x) -> keel::expected<void> {
        seen.push_back(x.entry.payload);
        if (x.entry.payload == R"({"what":"a"})")
          return keel::unavailable_error("still down");
        return {};
      });
  ASSERT_THAT(rep, IsOk());
  EXPECT_EQ(seen,
            (std::vector<std::string>{R"({"what":"a"})", R"({"what":"b"})", R"({"what":"d"})"}))
      << "c waits behind a (same key); k2 goes on";
  EXPECT_EQ(rep->failed, (std::vector<uint64_t>{before[0]}));
  EXPECT_EQ(rep->held, (std::vector<uint64_t>{before[2]}));
  EXPECT_EQ(rep->replayed, (std::vector<uint64_t>{before[1], before[3]}));
  EXPECT_TRUE(keel::is(rep->error, keel::code::unavailable)) << rep->error;
  // a is updated in place: same id, still before c.
  EXPECT_EQ(this->all_ids(), (std::vector<uint64_t>{before[0], before[2]}));
  auto a = this->dlq->show(before[0]);
  ASSERT_THAT(a, IsOk());
  EXPECT_EQ(a->attempts, 2u);
  EXPECT_EQ(a->first_seen, 1000);
  EXPECT_EQ(a->last_seen, 5000);
  EXPECT_NE(a->failure.message().find("replay 1"), std::string_view::npos) << a->failure;
  EXPECT_NE(keel::to_string(a->failure).find("still down"), std::string::npos) << a->failure;
  // An exception counts as a failure (a panic), not a crash of the replay.
  rep = this->dlq->replay({.key = "k1"}, [](const dlq_replay_item&) -> keel::expected<void> {
    throw std::runtime_error("boom");
  });
  ASSERT_THAT(rep, IsOk());
  EXPECT_TRUE(keel::is(rep->error, keel::code::panic)) << rep->error;
  EXPECT_EQ(this->dlq->show(before[0])->attempts, 3u);
  // Once the handler succeeds, the key drains in order.
  seen.clear();
  rep = this->dlq->replay({.key = "k1"}, [&](const dlq_replay_item& x) -> keel::expected<void> {
    seen.push_back(x.entry.payload);
    EXPECT_EQ(x.message_id, keel::dlq_replay_id(x.entry)) << "stable across replays";
    return {};
  });
  EXPECT_EQ(seen, (std::vector<std::string>{R"({"what":"a"})", R"({"what":"c"})"}));
  EXPECT_EQ(*this->dlq->size(), 0u);
}

TYPED_TEST(DeadLetterQueue, DryRunChangesNothing) {
  ASSERT_TRUE(this->journal);
  this->put("k1", "a");
  this->put("k2", "b");
  this->put("k1", "c");
  auto before = this->dlq->list();
  ASSERT_THAT(before, IsOk());
  int calls = 0;
  auto handler = [&](const dlq_replay_item&) -> keel::expected<void> {
    ++calls;
    return {};
  };
  auto rep = this->dlq->replay({.key = "k1"}, handler, {.dry_run = true});
  ASSERT_THAT(rep, IsOk());
  EXPECT_TRUE(rep->dry_run);
  EXPECT_EQ(rep->replayed, (std::vector<uint64_t>{(*before)[0].id, (*before)[2].id}));
  EXPECT_EQ(calls, 0);
  EXPECT_EQ(*this->dlq->list(), *before);
  // The limit holds back the rest, in order.
  rep = this->dlq->replay({.all = true}, handler, {.limit = 1});
  ASSERT_THAT(rep, IsOk());
  EXPECT_EQ(rep->replayed, (std::vector<uint64_t>{(*before)[0].id}));
  EXPECT_EQ(rep->held, (std::vector<uint64_t>{(*before)[1].id, (*before)[2].id}));
  EXPECT_EQ(calls, 1);
}

TYPED_TEST(DeadLetterQueue, PurgeVariants) {
  ASSERT_TRUE(this->journal);
  this->put("k1", "a"); // last seen 1000
  this->clock = 2000;
  this->put("k2", "b");
  this->put("k1", "c", {}, "parse");
  this->clock = 3000;
  this->put("k3", "d");
  this->put("k4", "e");
  auto ids = this->all_ids(); // a b c d e
  EXPECT_EQ(*this->dlq->purge({}), 0u) << "an empty selection selects nothing";
  EXPECT_EQ(*this->dlq->purge({.ids = {ids[4], 999}}), 1u);
  EXPECT_EQ(*this->dlq->purge({.key = "k1", .source = "parse"}), 1u); // c
  EXPECT_EQ(*this->dlq->purge({.older_than = 2000}), 1u);             // a
  EXPECT_EQ(this->all_ids(), (std::vector<uint64_t>{ids[1], ids[3]}));
  EXPECT_EQ(*this->dlq->purge({.key = "k2"}), 1u);
  dead_letter_queue other{this->journal, "refunds"};
  ASSERT_THAT(other.put(dlq_entry{}), IsOk());
  EXPECT_EQ(*this->dlq->purge({.all = true}), 1u);
  EXPECT_EQ(*this->dlq->size(), 0u);
  EXPECT_EQ(*other.size(), 1u) << "purging one queue leaves the others";
}

/// A consumer with exactly-once effects: it records each message id it
/// processes in the same batch as its work, and rejects duplicates.
struct deduplicating_consumer {
  std::shared_ptr<keel::store::journal> journal;
  int applied = 0;

  keel::expected<void> consume(const std::string& message_id) {
    write_batch b;
    b.mark_processed("ledger", message_id).set_checkpoint("ledger/last", message_id);
    if (auto r = journal->commit(b); !r)
      return r;
    ++applied;
    return {};
  }
};

TYPED_TEST(DeadLetterQueue, ReplayIsNotRejectedByDedup) {
  ASSERT_TRUE(this->journal);
  deduplicating_consumer ledger{this->journal};
  // The ledger took message m1, a later step failed: m1 is dead-lettered.
  ASSERT_THAT(ledger.consume("m1"), IsOk());
  this->put("m1", "a");
  ASSERT_THAT(ledger.consume("m1"), FailedWith(keel::code::already_exists))
      << "replaying with the original id would be rejected";
  auto entry = this->dlq->list()->at(0);
  auto rep = this->dlq->replay(
      {.all = true}, [&](const dlq_replay_item& x) { return ledger.consume(x.message_id); });
  ASSERT_THAT(rep, IsOk());
  EXPECT_FALSE(rep->error) << rep->error;
  EXPECT_EQ(rep->replayed.size(), 1u);
  EXPECT_EQ(ledger.applied, 2);
  EXPECT_TRUE(*this->journal->processed("ledger", keel::dlq_replay_id(entry)));
  EXPECT_EQ(*this->dlq->size(), 0u);
}

TYPED_TEST(DeadLetterQueue, ReplayAfterLostRemovalCountsTheDuplicateAsDone) {
  ASSERT_TRUE(this->journal);
  deduplicating_consumer ledger{this->journal};
  this->put("m2", "a");
  auto entry = this->dlq->list()->at(0);
  // An earlier replay got through to the ledger, then the process died
  // before removing the entry.
  ASSERT_THAT(ledger.consume(keel::dlq_replay_id(entry)), IsOk());
  auto handler = [&](const dlq_replay_item& x) { return ledger.consume(x.message_id); };
  auto strict = this->dlq->replay({.all = true}, handler, {.duplicate_is_done = false});
  ASSERT_THAT(strict, IsOk());
  EXPECT_EQ(strict->failed.size(), 1u);
  EXPECT_TRUE(keel::is(strict->error, keel::code::already_exists)) << strict->error;
  auto rep = this->dlq->replay({.all = true}, handler);
  ASSERT_THAT(rep, IsOk());
  EXPECT_FALSE(rep->error) << rep->error;
  EXPECT_EQ(rep->replayed, (std::vector<uint64_t>{entry.id}));
  EXPECT_EQ(ledger.applied, 1) << "applied once";
  EXPECT_EQ(*this->dlq->size(), 0u);
}

TYPED_TEST(DeadLetterQueue, UpdateOpIsAtomicWithItsBatch) {
  ASSERT_TRUE(this->journal);
  this->put("k", "a");
  auto id = this->all_ids().at(0);
  write_batch b;
  b.update_dlq(id, 7, 9000, keel::internal_error("x"))
      .mark_processed("c", "m")
      .mark_processed("c", "m");
  EXPECT_THAT(this->journal->commit(b), FailedWith(keel::code::already_exists));
  EXPECT_EQ(this->dlq->show(id)->attempts, 1u) << "rolled back with its batch";
  ASSERT_THAT(this->journal->commit(write_batch{}
                                        .update_dlq(id, 7, 9000, keel::internal_error("x"))
                                        .update_dlq(id + 50, 1, 1, {})),
              IsOk())
      << "a missing id is not an error";
  auto e = this->dlq->show(id);
  EXPECT_EQ(e->attempts, 7u);
  EXPECT_EQ(e->last_seen, 9000);
  EXPECT_TRUE(keel::is(e->failure, keel::code::internal));
}

} // namespace
