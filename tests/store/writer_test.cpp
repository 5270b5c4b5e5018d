// The journal writer actor: replies after the commit, group commit of what
// queued up while it was busy, per-batch failures, many requesters.

#include "writer_fixture.hpp"

#include "keel/testing/matchers.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <future>

namespace {

using namespace keel::store;
using keel::testing::FailedWith;
using keel::testing::IsOk;
using keel_test::event_batch;
using keel_test::hang_guard;

class JournalWriter : public ::testing::Test {
protected:
  /// Holds the writer at its first commit (of `first`), queues `rest` behind
  /// it, lets it go and returns every reply, `first`'s first.
  std::vector<keel::error> commit_behind_busy_writer(const caf::actor& writer,
                                                     keel_test::gated_journal& gate,
                                                     const write_batch& first,
                                                     const std::vector<write_batch>& rest) {
    caf::scoped_actor self{sys};
    gate.close();
    auto h0 = self->request(writer, hang_guard, commit_atom::value, first);
    EXPECT_TRUE(gate.wait_until_blocked());
    std::vector<decltype(h0)> hs;
    for (const auto& b : rest)
      hs.push_back(self->request(writer, hang_guard, commit_atom::value, b));
    gate.open();
    std::vector<keel::error> result;
    result.push_back(keel_test::reply_of(h0));
    for (auto& h : hs)
      result.push_back(keel_test::reply_of(h));
    return result;
  }

  /// Commits eleven event batches to stream "s" through a writer with `opts`
  /// on `gate`, ten of them queued behind the first; expects each to succeed
  /// and returns the writer's stats.
  writer_stats commit_eleven_behind_busy_writer(std::shared_ptr<keel_test::gated_journal> gate,
                                                writer_options opts = {}) {
    auto writer = spawn_writer(gate, opts);
    auto replies =
        commit_behind_busy_writer(writer, *gate, event_batch("s", 0), event_batches("s", 1, 10));
    for (const auto& r : replies)
      EXPECT_THAT(r, IsOk());
    caf::scoped_actor self{sys};
    return keel_test::stats_of(self, writer);
  }

  /// Spawns a writer that the fixture stops at the end, even after a failed
  /// assertion (the actor system's destructor waits for every actor).
  caf::actor spawn_writer(std::shared_ptr<journal> j, writer_options opts = {}) {
    auto w = spawn_journal_writer(sys, std::move(j), opts);
    writers_.push_back(w);
    return w;
  }

  void TearDown() override {
    for (auto& w : writers_)
      caf::anon_send_exit(w, caf::exit_reason::user_shutdown);
    writers_.clear();
  }

  static std::vector<write_batch> event_batches(const std::string& stream, int first, int n) {
    std::vector<write_batch> result;
    for (int i = first; i < first + n; ++i)
      result.push_back(event_batch(stream, i));
    return result;
  }

  keel_test::temp_dir dir;
  keel_test::writer_config cfg;
  caf::actor_system sys{cfg};

private:
  std::vector<caf::actor> writers_;
};

TEST_F(JournalWriter, RepliesOnceTheBatchIsDurable) {
  auto path = dir.file("w.journal");
  auto j = open_sqlite_journal(path); // durability::full
  ASSERT_THAT(j, IsOk());
  auto writer = spawn_writer(*j);
  caf::scoped_actor self{sys};
  auto h = self->request(writer, hang_guard, commit_atom::value,
                         write_batch{}.put_saga(keel_test::sample_saga("s1")));
  ASSERT_THAT(keel_test::reply_of(h), IsOk());
  // Committed: another connection to the file sees it.
  auto other = open_sqlite_journal(path, keel_test::fast_options());
  ASSERT_THAT(other, IsOk());
  EXPECT_EQ((*other)->saga("s1").value(), keel_test::sample_saga("s1"));
  auto stats = keel_test::stats_of(self, writer);
  EXPECT_EQ(stats.batches, 1u);
  EXPECT_EQ(stats.transactions, 1u);
  EXPECT_EQ(stats.failed_batches, 0u);
}

TEST_F(JournalWriter, GroupsBatchesThatQueuedWhileBusy) {
  auto gate = std::make_shared<keel_test::gated_journal>(make_memory_journal());
  auto stats = commit_eleven_behind_busy_writer(gate);
  EXPECT_EQ(stats.batches, 11u);
  EXPECT_EQ(stats.transactions, 2u);
  EXPECT_EQ(stats.largest_group, 10u);
  EXPECT_LT(stats.transactions, stats.batches);
  // In request order.
  auto es = gate->events("s");
  ASSERT_THAT(es, IsOk());
  ASSERT_EQ(es->size(), 11u);
  for (size_t i = 0; i < es->size(); ++i)
    EXPECT_EQ((*es)[i].name, std::to_string(i));
}

TEST_F(JournalWriter, MaxGroupOneCommitsEachBatchAlone) {
  auto gate = std::make_shared<keel_test::gated_journal>(make_memory_journal());
  auto stats = commit_eleven_behind_busy_writer(gate, writer_options{.max_group = 1});
  EXPECT_EQ(stats.batches, 11u);
  EXPECT_EQ(stats.transactions, 11u);
  EXPECT_EQ(stats.largest_group, 1u);
  EXPECT_EQ(gate->events("s")->size(), 11u);
}

TEST_F(JournalWriter, MaxGroupSplitsLargeGroups) {
  auto gate = std::make_shared<keel_test::gated_journal>(make_memory_journal());
  auto stats = commit_eleven_behind_busy_writer(gate, writer_options{.max_group = 4});
  EXPECT_EQ(stats.batches, 11u);
  EXPECT_EQ(stats.transactions, 4u); // 1, then 4 + 4 + 2
  EXPECT_EQ(stats.largest_group, 4u);
}

TEST_F(JournalWriter, FailingBatchFailsOnlyItsRequester) {
  auto inner = make_memory_journal();
  ASSERT_THAT(
      inner->commit(write_batch{}.acquire_lease(saga_lease("o2"), "node-a", 0, int64_t{1} << 50)),
      IsOk());
  auto gate = std::make_shared<keel_test::gated_journal>(inner);
  auto writer = spawn_writer(gate);
  std::vector<write_batch> rest(3);
  rest[0].put_saga(keel_test::sample_saga("o1"));
  rest[1].acquire_lease(saga_lease("o2"), "node-b", 1000, 100);
  rest[1].put_saga(keel_test::sample_saga("o2"));
  rest[2].put_saga(keel_test::sample_saga("o3"));
  auto replies = commit_behind_busy_writer(writer, *gate, event_batch("s", 0), rest);
  ASSERT_EQ(replies.size(), 4u);
  EXPECT_THAT(replies[0], IsOk());
  EXPECT_THAT(replies[1], IsOk());
  EXPECT_THAT(replies[2], FailedWith(keel::code::failed_precondition));
  EXPECT_THAT(keel::to_string(replies[2]), ::testing::HasSubstr("node-a"));
  EXPECT_THAT(replies[3], IsOk());
  EXPECT_TRUE(inner->saga("o1").value().has_value());
  EXPECT_FALSE(inner->saga("o2").value().has_value());
  EXPECT_TRUE(inner->saga("o3").value().has_value());
  caf::scoped_actor self{sys};
  auto stats = keel_test::stats_of(self, writer);
  EXPECT_EQ(stats.failed_batches, 1u);
  EXPECT_EQ(stats.transactions, 2u);
}

TEST_F(JournalWriter, ThrowingJournalFailsTheGroupWithPanicAndKeepsGoing) {
  auto gate = std::make_shared<keel_test::gated_journal>(make_memory_journal());
  auto writer = spawn_writer(gate);
  caf::scoped_actor self{sys};
  gate->throw_next();
  auto h = self->request(writer, hang_guard, commit_atom::value, event_batch("s", 0));
  auto err = keel_test::reply_of(h);
  EXPECT_THAT(err, FailedWith(keel::code::panic));
  EXPECT_THAT(keel::to_string(err), ::testing::HasSubstr("disk on fire"));
  auto h2 = self->request(writer, hang_guard, commit_atom::value, event_batch("s", 1));
  EXPECT_THAT(keel_test::reply_of(h2), IsOk());
  EXPECT_EQ(gate->events("s")->size(), 1u);
}

TEST_F(JournalWriter, EveryRequesterGetsAReplyWhenTheWriterExits) {
  auto gate = std::make_shared<keel_test::gated_journal>(make_memory_journal());
  auto writer = spawn_writer(gate);
  caf::scoped_actor self{sys};
  gate->close();
  auto h0 = self->request(writer, hang_guard, commit_atom::value, event_batch("a", 0));
  ASSERT_TRUE(gate->wait_until_blocked());
  auto h1 = self->request(writer, hang_guard, commit_atom::value, event_batch("b", 0));
  auto h2 = self->request(writer, hang_guard, commit_atom::value, event_batch("c", 0));
  self->send_exit(writer, caf::exit_reason::user_shutdown);
  gate->open();
  EXPECT_THAT(keel_test::reply_of(h0), IsOk());
  // Each reply tells the truth: ok means committed, an error means not.
  for (auto [h, stream] : {std::pair{&h1, "b"}, std::pair{&h2, "c"}}) {
    auto err = keel_test::reply_of(*h);
    EXPECT_FALSE(keel::is(err, keel::code::deadline_exceeded)) << "no reply for " << stream;
    EXPECT_EQ(gate->events(stream)->size(), err ? 0u : 1u) << keel::to_string(err);
  }
}

TEST_F(JournalWriter, ManyConcurrentRequestersAllCommit) {
  auto j = open_sqlite_journal(dir.file("many.journal"), keel_test::fast_options());
  ASSERT_THAT(j, IsOk());
  auto writer = spawn_writer(*j);
  constexpr int clients = 64;
  constexpr int commits_each = 50;
  std::atomic<int> done{0};
  std::atomic<int> failures{0};
  std::promise<void> all_done;
  for (int c = 0; c < clients; ++c) {
    sys.spawn([&, c, writer](caf::event_based_actor* self) {
      // Sequential: the next commit goes out once the previous one is durable.
      auto next = std::make_shared<std::function<void(int)>>();
      *next = [&, self, c, writer, weak = std::weak_ptr{next}](int i) {
        if (i == commits_each) {
          if (++done == clients)
            all_done.set_value();
          return;
        }
        auto b = event_batch("client/" + std::to_string(c), i);
        b.put_saga(keel_test::sample_saga("saga-" + std::to_string(c)));
        self->request(writer, hang_guard, commit_atom::value, std::move(b))
            .then(
                [&, weak, i](const keel::error& err) {
                  if (err)
                    ++failures;
                  if (auto f = weak.lock())
                    (*f)(i + 1);
                },
                [&](caf::error&) {
                  ++failures;
                  if (++done == clients)
                    all_done.set_value();
                });
      };
      self->attach_functor([next] {}); // keeps the loop alive with the actor
      (*next)(0);
    });
  }
  ASSERT_EQ(all_done.get_future().wait_for(hang_guard), std::future_status::ready);
  EXPECT_EQ(failures.load(), 0);
  for (int c = 0; c < clients; ++c) {
    auto es = (*j)->events("client/" + std::to_string(c));
    ASSERT_THAT(es, IsOk());
    ASSERT_EQ(es->size(), size_t{commits_each}) << "client " << c;
    for (int i = 0; i < commits_each; ++i) {
      EXPECT_EQ((*es)[i].seq, uint64_t(i + 1));
      EXPECT_EQ((*es)[i].name, std::to_string(i));
    }
  }
  EXPECT_EQ((*j)->sagas()->size(), size_t{clients});
  caf::scoped_actor self{sys};
  auto stats = keel_test::stats_of(self, writer);
  EXPECT_EQ(stats.batches, uint64_t{clients * commits_each});
  EXPECT_LE(stats.transactions, stats.batches);
  EXPECT_EQ(stats.failed_batches, 0u);
  std::cout << "[ info ] " << stats.batches << " batches in " << stats.transactions
            << " transactions, largest group " << stats.largest_group << '\n';
}

} // namespace
