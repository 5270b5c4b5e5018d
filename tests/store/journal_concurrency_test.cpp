// Journals under concurrent load (also run under TSan): threads committing
// groups and reading at once, and the writer actor with many requesters while
// other threads write to the same journal directly. Group sizes and batch
// contents are randomised (KEEL_TEST_SEED replays a run).

#include "writer_fixture.hpp"

#include "../test_env.hpp"
#include "keel/testing/matchers.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <thread>

namespace {

using namespace keel::store;
using keel::testing::FailedWith;
using keel::testing::IsOk;

/// Every thread appends to the shared stream and its own; some batches are
/// duplicates (already processed) and must leave no trace.
void hammer(journal& j, int thread, int rounds, uint64_t seed, std::atomic<int>& committed_shared,
            std::atomic<int>& unexpected) {
  std::mt19937_64 rng{seed + static_cast<uint64_t>(thread)};
  auto own = "own/" + std::to_string(thread);
  for (int r = 0; r < rounds; ++r) {
    auto n = std::uniform_int_distribution<int>{1, 5}(rng);
    std::vector<write_batch> batches(static_cast<size_t>(n));
    std::vector<bool> dup(batches.size());
    for (size_t i = 0; i < batches.size(); ++i) {
      auto id = std::to_string(thread) + "/" + std::to_string(r) + "/" + std::to_string(i);
      // A duplicate names a message processed in an earlier round.
      dup[i] = r > 0 && std::uniform_int_distribution<int>{0, 3}(rng) == 0;
      if (dup[i])
        id = std::to_string(thread) + "/0/0";
      batches[i]
          .append_event("shared", "tick", std::to_string(thread))
          .append_event(own, "tick", id)
          .put_saga(keel_test::sample_saga("saga-" + std::to_string(thread)))
          .mark_processed("hammer", id);
    }
    std::vector<const write_batch*> ptrs;
    for (const auto& b : batches)
      ptrs.push_back(&b);
    auto errs = j.commit_group(ptrs);
    if (errs.size() != batches.size()) {
      ++unexpected;
      continue;
    }
    // Exactly the duplicates fail, with already_exists.
    for (size_t i = 0; i < errs.size(); ++i) {
      if (dup[i] != keel::is(errs[i], keel::code::already_exists) || (!dup[i] && errs[i]))
        ++unexpected;
      if (!errs[i])
        ++committed_shared;
    }
  }
}

template <class Kind>
class JournalConcurrency : public ::testing::Test {
protected:
  keel_test::temp_dir dir;
};

TYPED_TEST_SUITE(JournalConcurrency, keel_test::journal_kinds, keel_test::kind_names);

TYPED_TEST(JournalConcurrency, ThreadsCommittingGroupsKeepStreamsGapless) {
  auto seed = keel_test::test_seed();
  std::cout << "[ seed ] KEEL_TEST_SEED=" << seed << '\n';
  auto j = TypeParam::open(this->dir);
  ASSERT_NE(j, nullptr);
  constexpr int threads = 4;
  const int rounds = static_cast<int>(std::max<size_t>(10, 400 / keel_test::test_scale()));
  std::atomic<int> committed_shared{0};
  std::atomic<int> unexpected{0};
  std::atomic<bool> stop{false};
  std::atomic<int> read_failures{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&, t] { hammer(*j, t, rounds, seed, committed_shared, unexpected); });
  // A reader: whatever it sees is a gapless prefix of the shared stream.
  std::thread reader([&] {
    while (!stop.load()) {
      auto es = j->events("shared");
      if (!es) {
        ++read_failures;
        continue;
      }
      for (size_t i = 0; i < es->size(); ++i)
        if ((*es)[i].seq != i + 1)
          ++read_failures;
      if (!j->sagas({.unfinished_only = true}))
        ++read_failures;
    }
  });
  for (auto& t : ts)
    t.join();
  stop = true;
  reader.join();
  EXPECT_EQ(unexpected.load(), 0);
  EXPECT_EQ(read_failures.load(), 0);
  auto shared = j->events("shared");
  ASSERT_THAT(shared, IsOk());
  ASSERT_EQ(shared->size(), size_t(committed_shared.load()));
  for (size_t i = 0; i < shared->size(); ++i)
    ASSERT_EQ((*shared)[i].seq, i + 1);
  size_t own_total = 0;
  for (int t = 0; t < threads; ++t) {
    auto own = j->events("own/" + std::to_string(t));
    ASSERT_THAT(own, IsOk());
    for (size_t i = 0; i < own->size(); ++i)
      EXPECT_EQ((*own)[i].seq, i + 1);
    own_total += own->size();
  }
  EXPECT_EQ(own_total, shared->size());
  EXPECT_EQ(j->sagas()->size(), size_t{threads});
}

TEST(JournalWriterConcurrency, WriterAndDirectCommitsShareOneSqliteJournal) {
  auto seed = keel_test::test_seed();
  std::cout << "[ seed ] KEEL_TEST_SEED=" << seed << '\n';
  keel_test::temp_dir dir;
  auto opened = open_sqlite_journal(dir.file("w.journal"), keel_test::fast_options());
  ASSERT_THAT(opened, IsOk());
  auto j = *opened;
  keel_test::writer_config cfg;
  caf::actor_system sys{cfg};
  auto writer = spawn_journal_writer(sys, j);
  constexpr int requesters = 8;
  const int each = static_cast<int>(std::max<size_t>(5, 200 / keel_test::test_scale()));
  std::atomic<int> failures{0};
  std::vector<std::thread> ts;
  // Threads with their own blocking actor, one request at a time.
  for (int t = 0; t < requesters; ++t)
    ts.emplace_back([&, t] {
      caf::scoped_actor self{sys};
      for (int i = 0; i < each; ++i) {
        auto b = keel_test::event_batch("writer/" + std::to_string(t), i);
        b.append_event("shared", "w")
            .mark_processed("w", std::to_string(t) + "/" + std::to_string(i));
        auto h = self->request(writer, keel_test::hang_guard, commit_atom::value, std::move(b));
        if (keel_test::reply_of(h))
          ++failures;
      }
    });
  // A thread committing groups directly, around the writer.
  std::atomic<int> direct_ok{0};
  ts.emplace_back([&] {
    std::mt19937_64 rng{seed};
    for (int r = 0; r < each; ++r) {
      std::vector<write_batch> batches(std::uniform_int_distribution<size_t>{1, 4}(rng));
      std::vector<const write_batch*> ptrs;
      for (auto& b : batches) {
        b.append_event("shared", "d").set_checkpoint("direct", std::to_string(r));
        ptrs.push_back(&b);
      }
      for (const auto& err : j->commit_group(ptrs)) {
        if (err)
          ++failures;
        else
          ++direct_ok;
      }
    }
  });
  for (auto& t : ts)
    t.join();
  EXPECT_EQ(failures.load(), 0);
  for (int t = 0; t < requesters; ++t) {
    auto es = j->events("writer/" + std::to_string(t));
    ASSERT_THAT(es, IsOk());
    ASSERT_EQ(es->size(), size_t(each));
    for (int i = 0; i < each; ++i)
      EXPECT_EQ((*es)[i].name, std::to_string(i));
  }
  auto shared = j->events("shared");
  ASSERT_THAT(shared, IsOk());
  EXPECT_EQ(shared->size(), size_t(requesters * each + direct_ok.load()));
  for (size_t i = 0; i < shared->size(); ++i)
    ASSERT_EQ((*shared)[i].seq, i + 1);
  caf::scoped_actor self{sys};
  auto stats = keel_test::stats_of(self, writer);
  EXPECT_EQ(stats.batches, uint64_t(requesters * each));
  EXPECT_LE(stats.transactions, stats.batches);
  EXPECT_EQ(stats.failed_batches, 0u);
  self->send_exit(writer, caf::exit_reason::user_shutdown);
}

} // namespace
