// The journal conformance suite: every test runs against the in-memory and
// the SQLite journal, which must behave the same.

#include "helpers.hpp"

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

template <class Kind>
class JournalConformance : public ::testing::Test {
protected:
  void SetUp() override {
    j = Kind::open(dir);
    ASSERT_NE(j, nullptr);
  }

  void TearDown() override { j.reset(); }

  /// Commits `b` alone, expecting success.
  void commit_ok(const write_batch& b) { ASSERT_THAT(j->commit(b), IsOk()); }

  std::vector<uint64_t> seqs(const std::string& stream) {
    auto es = j->events(stream);
    EXPECT_THAT(es, IsOk());
    std::vector<uint64_t> result;
    if (!es)
      return result;
    for (const auto& e : *es)
      result.push_back(e.seq);
    return result;
  }

  std::vector<std::string> saga_ids(const saga_filter& f) {
    auto rs = j->sagas(f);
    EXPECT_THAT(rs, IsOk());
    std::vector<std::string> result;
    if (!rs)
      return result;
    for (const auto& r : *rs)
      result.push_back(r.id);
    return result;
  }

  keel_test::temp_dir dir;
  std::shared_ptr<journal> j;
};

TYPED_TEST_SUITE(JournalConformance, keel_test::journal_kinds, keel_test::kind_names);

// -- records ---------------------------------------------------------------------

TYPED_TEST(JournalConformance, SagaRecordsRoundTrip) {
  auto r = keel_test::sample_saga("order-1");
  this->commit_ok(write_batch{}.put_saga(r));
  auto back = this->j->saga("order-1");
  ASSERT_THAT(back, IsOk());
  ASSERT_TRUE(back->has_value());
  EXPECT_EQ(**back, r);
  // Replacing keeps one record with the new content.
  r.state = saga_state::compensating;
  r.completed.clear();
  r.failure = {};
  r.compensation_failure = {};
  r.data = "{}";
  this->commit_ok(write_batch{}.put_saga(r));
  back = this->j->saga("order-1");
  ASSERT_THAT(back, IsOk());
  EXPECT_EQ(**back, r);
  EXPECT_EQ(this->j->sagas()->size(), 1u);
}

TYPED_TEST(JournalConformance, MissingRecordsAreEmpty) {
  EXPECT_EQ(this->j->saga("nope").value(), std::nullopt);
  EXPECT_EQ(this->j->checkpoint("nope").value(), std::nullopt);
  EXPECT_EQ(this->j->lease("nope").value(), std::nullopt);
  EXPECT_FALSE(this->j->processed("c", "nope").value());
  EXPECT_TRUE(this->j->events("nope")->empty());
  EXPECT_TRUE(this->j->dlq()->empty());
  EXPECT_TRUE(this->j->sagas()->empty());
}

TYPED_TEST(JournalConformance, EventsGetSequenceNumbersPerStream) {
  this->commit_ok(write_batch{}
                      .append_event("saga/a", "step_started", "reserve", 1, R"({"x":1})", 111)
                      .append_event("saga/a", "step_completed", "reserve", 1));
  this->commit_ok(write_batch{}.append_event("saga/b", "step_started", "charge"));
  event_record e;
  e.stream = "saga/a";
  e.seq = 77; // ignored: the journal assigns it
  e.type = "compensation_failed";
  e.name = "refund";
  e.attempt = 4;
  e.detail = R"({"error": "boom"})";
  e.at = 333;
  this->commit_ok(write_batch{}.append_event(e));
  EXPECT_EQ(this->seqs("saga/a"), (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_EQ(this->seqs("saga/b"), (std::vector<uint64_t>{1}));
  auto es = this->j->events("saga/a");
  ASSERT_THAT(es, IsOk());
  ASSERT_EQ(es->size(), 3u);
  EXPECT_EQ((*es)[0].at, 111);
  EXPECT_EQ((*es)[0].type, "step_started");
  EXPECT_EQ((*es)[0].name, "reserve");
  EXPECT_EQ((*es)[0].attempt, 1u);
  EXPECT_EQ((*es)[0].detail, R"({"x":1})");
  EXPECT_EQ((*es)[1].detail, "{}");
  EXPECT_GT((*es)[1].at, 0) << "at 0 is stamped with the journal's clock";
  e.seq = 3;
  EXPECT_EQ((*es)[2], e);
}

TYPED_TEST(JournalConformance, EventsAfterAndLimit) {
  write_batch b;
  for (int i = 0; i < 10; ++i)
    b.append_event("s", "tick", std::to_string(i));
  this->commit_ok(b);
  auto es = this->j->events("s", 4, 3);
  ASSERT_THAT(es, IsOk());
  ASSERT_EQ(es->size(), 3u);
  EXPECT_EQ((*es)[0].seq, 5u);
  EXPECT_EQ((*es)[0].name, "4");
  EXPECT_EQ((*es)[2].seq, 7u);
  EXPECT_EQ(this->j->events("s", 8)->size(), 2u);
  EXPECT_TRUE(this->j->events("s", 10)->empty());
  EXPECT_TRUE(this->j->events("s", 1000)->empty());
}

TYPED_TEST(JournalConformance, DeadLettersKeepOrderPerKeyAndGetIds) {
  this->commit_ok(write_batch{}
                      .put_dlq(keel_test::sample_dlq("orders", "k1", 1))
                      .put_dlq(keel_test::sample_dlq("payments", "k1", 2)));
  this->commit_ok(write_batch{}
                      .put_dlq(keel_test::sample_dlq("orders", "k2", 3))
                      .put_dlq(keel_test::sample_dlq("orders", "k1", 4)));
  auto all = this->j->dlq();
  ASSERT_THAT(all, IsOk());
  ASSERT_EQ(all->size(), 4u);
  for (size_t i = 0; i < all->size(); ++i)
    EXPECT_EQ((*all)[i].id, i + 1) << "ids are assigned from 1, in commit order";
  auto expected = keel_test::sample_dlq("payments", "k1", 2);
  expected.id = 2;
  EXPECT_EQ((*all)[1], expected);
  auto orders = this->j->dlq("orders");
  ASSERT_THAT(orders, IsOk());
  ASSERT_EQ(orders->size(), 3u);
  std::vector<uint32_t> k1_attempts;
  for (const auto& e : *orders)
    if (e.key == "k1")
      k1_attempts.push_back(e.attempts);
  EXPECT_EQ(k1_attempts, (std::vector<uint32_t>{1, 4}));
  EXPECT_EQ(this->j->dlq("orders", 2)->size(), 2u);
  // Removal; a missing id is not an error; ids are not reused.
  this->commit_ok(write_batch{}.remove_dlq(1).remove_dlq(999));
  this->commit_ok(write_batch{}.remove_dlq(4));
  this->commit_ok(write_batch{}.put_dlq(keel_test::sample_dlq("orders", "k3")));
  orders = this->j->dlq("orders");
  ASSERT_THAT(orders, IsOk());
  ASSERT_EQ(orders->size(), 2u);
  EXPECT_EQ((*orders)[0].id, 3u);
  EXPECT_EQ((*orders)[1].id, 5u);
  EXPECT_EQ((*orders)[1].key, "k3");
}

TYPED_TEST(JournalConformance, CheckpointsSetAndOverwrite) {
  this->commit_ok(write_batch{}.set_checkpoint("bus/payments", "17").set_checkpoint("b", ""));
  EXPECT_EQ(this->j->checkpoint("bus/payments").value(), "17");
  EXPECT_EQ(this->j->checkpoint("b").value(), "");
  this->commit_ok(write_batch{}.set_checkpoint("bus/payments", "18"));
  EXPECT_EQ(this->j->checkpoint("bus/payments").value(), "18");
}

// -- dedup -----------------------------------------------------------------------

TYPED_TEST(JournalConformance, MarkProcessedRejectsDuplicates) {
  this->commit_ok(write_batch{}.mark_processed("billing", "msg-1"));
  EXPECT_TRUE(this->j->processed("billing", "msg-1").value());
  EXPECT_FALSE(this->j->processed("shipping", "msg-1").value());
  // The duplicate fails its whole batch: the work done with it is not kept.
  auto r = this->j->commit(
      write_batch{}.set_checkpoint("billing", "2").mark_processed("billing", "msg-1"));
  EXPECT_THAT(r, FailedWith(keel::code::already_exists));
  EXPECT_THAT(keel::to_string(r.error()),
              AllOf(HasSubstr("billing"), HasSubstr("msg-1"), HasSubstr(this->j->describe())));
  EXPECT_EQ(this->j->checkpoint("billing").value(), std::nullopt);
  // Another consumer may process the same message.
  this->commit_ok(write_batch{}.mark_processed("shipping", "msg-1"));
  EXPECT_TRUE(this->j->processed("shipping", "msg-1").value());
}

TYPED_TEST(JournalConformance, DuplicateInsideOneBatchFailsIt) {
  auto r = this->j->commit(write_batch{}.mark_processed("c", "1").mark_processed("c", "1"));
  EXPECT_THAT(r, FailedWith(keel::code::already_exists));
  EXPECT_FALSE(this->j->processed("c", "1").value());
}

// -- leases ----------------------------------------------------------------------

TYPED_TEST(JournalConformance, LeaseAcquireRenewTakeoverRelease) {
  auto& j = *this->j;
  this->commit_ok(write_batch{}.acquire_lease("saga/o1", "node-a", 1000, 100));
  EXPECT_EQ(j.lease("saga/o1").value(), (lease_record{"saga/o1", "node-a", 1100}));
  // Refused while node-a holds it; the refusal names lease, holder and expiry.
  auto r = j.commit(write_batch{}.acquire_lease("saga/o1", "node-b", 1099, 100));
  EXPECT_THAT(r, FailedWith(keel::code::failed_precondition));
  EXPECT_THAT(keel::to_string(r.error()),
              AllOf(HasSubstr("saga/o1"), HasSubstr("node-a"), HasSubstr("1100")));
  // The owner renews.
  this->commit_ok(write_batch{}.acquire_lease("saga/o1", "node-a", 1050, 100));
  EXPECT_EQ(j.lease("saga/o1").value(), (lease_record{"saga/o1", "node-a", 1150}));
  // Expired (expires <= now): another owner takes it over.
  this->commit_ok(write_batch{}.acquire_lease("saga/o1", "node-b", 1150, 200));
  EXPECT_EQ(j.lease("saga/o1").value(), (lease_record{"saga/o1", "node-b", 1350}));
  // Only the owner can release it.
  this->commit_ok(write_batch{}.release_lease("saga/o1", "node-a"));
  EXPECT_EQ(j.lease("saga/o1").value(), (lease_record{"saga/o1", "node-b", 1350}));
  this->commit_ok(write_batch{}.release_lease("saga/o1", "node-b"));
  EXPECT_EQ(j.lease("saga/o1").value(), std::nullopt);
  this->commit_ok(write_batch{}.release_lease("saga/o1", "node-b"));
}

TYPED_TEST(JournalConformance, LeaseFencesItsBatch) {
  this->commit_ok(write_batch{}.acquire_lease(saga_lease("o1"), "node-a", 1000, 100));
  auto r = this->j->commit(write_batch{}
                               .acquire_lease(saga_lease("o1"), "node-b", 1010, 100)
                               .put_saga(keel_test::sample_saga("o1"))
                               .append_event(saga_stream("o1"), "step_started"));
  EXPECT_THAT(r, FailedWith(keel::code::failed_precondition));
  EXPECT_EQ(this->j->saga("o1").value(), std::nullopt);
  EXPECT_TRUE(this->j->events(saga_stream("o1"))->empty());
}

// -- groups ----------------------------------------------------------------------

TYPED_TEST(JournalConformance, FailingBatchInGroupLeavesNoTrace) {
  this->commit_ok(write_batch{}.mark_processed("c", "dup"));
  write_batch b0, b1, b2;
  b0.put_saga(keel_test::sample_saga("s0")).append_event("st", "e0");
  b1.put_saga(keel_test::sample_saga("s1"))
      .append_event("st", "e1")
      .put_dlq(keel_test::sample_dlq("q", "k1"))
      .set_checkpoint("cp", "1")
      .acquire_lease("l", "o", 1, 10)
      .mark_processed("c", "dup");
  b2.append_event("st", "e2").put_dlq(keel_test::sample_dlq("q", "k2"));
  const write_batch* group[] = {&b0, &b1, &b2};
  auto errs = this->j->commit_group(group);
  ASSERT_EQ(errs.size(), 3u);
  EXPECT_THAT(errs[0], IsOk());
  EXPECT_THAT(errs[1], FailedWith(keel::code::already_exists));
  EXPECT_THAT(errs[2], IsOk());
  EXPECT_TRUE(this->j->saga("s0").value().has_value());
  EXPECT_EQ(this->j->saga("s1").value(), std::nullopt);
  EXPECT_EQ(this->j->checkpoint("cp").value(), std::nullopt);
  EXPECT_EQ(this->j->lease("l").value(), std::nullopt);
  // The failed batch took no sequence number and no dead-letter id.
  auto es = this->j->events("st");
  ASSERT_THAT(es, IsOk());
  ASSERT_EQ(es->size(), 2u);
  EXPECT_EQ((*es)[0].type, "e0");
  EXPECT_EQ((*es)[1].type, "e2");
  EXPECT_EQ((*es)[1].seq, 2u);
  auto dl = this->j->dlq();
  ASSERT_THAT(dl, IsOk());
  ASSERT_EQ(dl->size(), 1u);
  EXPECT_EQ((*dl)[0].key, "k2");
  EXPECT_EQ((*dl)[0].id, 1u);
}

TYPED_TEST(JournalConformance, LaterBatchesSeeEarlierOnesOfTheGroup) {
  write_batch b0, b1, b2;
  b0.mark_processed("c", "m");
  b1.mark_processed("c", "m");
  b2.acquire_lease("l", "a", 0, 100);
  write_batch b3;
  b3.acquire_lease("l", "b", 50, 100);
  const write_batch* group[] = {&b0, &b1, &b2, &b3};
  auto errs = this->j->commit_group(group);
  ASSERT_EQ(errs.size(), 4u);
  EXPECT_THAT(errs[0], IsOk());
  EXPECT_THAT(errs[1], FailedWith(keel::code::already_exists));
  EXPECT_THAT(errs[2], IsOk());
  EXPECT_THAT(errs[3], FailedWith(keel::code::failed_precondition));
  EXPECT_EQ(this->j->lease("l").value(), (lease_record{"l", "a", 100}));
}

TYPED_TEST(JournalConformance, EmptyGroupsAndBatches) {
  EXPECT_TRUE(this->j->commit_group({}).empty());
  this->commit_ok(write_batch{});
  write_batch empty;
  const write_batch* group[] = {&empty, &empty};
  auto errs = this->j->commit_group(group);
  ASSERT_EQ(errs.size(), 2u);
  EXPECT_THAT(errs[0], IsOk());
  EXPECT_THAT(errs[1], IsOk());
}

TYPED_TEST(JournalConformance, InvalidOperationsFailTheirBatch) {
  auto invalid = [&](write_batch b) {
    auto r = this->j->commit(b.set_checkpoint("after", "x"));
    EXPECT_THAT(r, FailedWith(keel::code::invalid_argument));
    EXPECT_EQ(this->j->checkpoint("after").value(), std::nullopt);
  };
  invalid(write_batch{}.put_saga(keel::store::saga_record{}));
  invalid(write_batch{}.append_event("", "t"));
  invalid(write_batch{}.append_event("s", ""));
  invalid(write_batch{}.put_dlq(keel::store::dlq_entry{}));
  invalid(write_batch{}.set_checkpoint("", "v"));
  invalid(write_batch{}.mark_processed("", "id"));
  invalid(write_batch{}.mark_processed("c", ""));
  invalid(write_batch{}.acquire_lease("l", "o", 0, 0));
  invalid(write_batch{}.acquire_lease("", "o", 0, 10));
  invalid(write_batch{}.release_lease("l", ""));
}

// -- queries ---------------------------------------------------------------------

TYPED_TEST(JournalConformance, SagaFilters) {
  write_batch b;
  b.put_saga(keel_test::sample_saga("d", saga_state::completed, "payment"));
  b.put_saga(keel_test::sample_saga("a", saga_state::running, "payment"));
  b.put_saga(keel_test::sample_saga("c", saga_state::needs_intervention, "shipping"));
  b.put_saga(keel_test::sample_saga("b", saga_state::pending, "shipping"));
  b.put_saga(keel_test::sample_saga("e", saga_state::rolled_back, "payment"));
  b.put_saga(keel_test::sample_saga("f", saga_state::compensating, "payment"));
  this->commit_ok(b);
  using ids = std::vector<std::string>;
  EXPECT_EQ(this->saga_ids({}), (ids{"a", "b", "c", "d", "e", "f"}));
  EXPECT_EQ(this->saga_ids({.state = saga_state::running}), (ids{"a"}));
  EXPECT_EQ(this->saga_ids({.kind = "shipping"}), (ids{"b", "c"}));
  EXPECT_EQ(this->saga_ids({.unfinished_only = true}), (ids{"a", "b", "f"}));
  EXPECT_EQ(this->saga_ids({.kind = "payment", .unfinished_only = true}), (ids{"a", "f"}));
  EXPECT_EQ(this->saga_ids({.limit = 2}), (ids{"a", "b"}));
  EXPECT_EQ(this->saga_ids({.kind = "payment", .limit = 3}), (ids{"a", "d", "e"}));
  EXPECT_EQ(this->saga_ids({.state = saga_state::completed, .unfinished_only = true}), ids{});
  EXPECT_EQ(this->saga_ids({.kind = "none"}), ids{});
}

TYPED_TEST(JournalConformance, SagaHelpersNameStreamsAndLeases) {
  EXPECT_EQ(saga_stream("o-17"), "saga/o-17");
  EXPECT_EQ(saga_lease("o-17"), "saga/o-17");
  this->commit_ok(write_batch{}.append_event(saga_stream("o-17"), "step_started"));
  EXPECT_EQ(this->seqs("saga/o-17"), (std::vector<uint64_t>{1}));
}

// -- not per journal ----------------------------------------------------------------

TEST(SagaState, NamesRoundTrip) {
  for (int i = 0; i <= 5; ++i) {
    auto s = static_cast<saga_state>(i);
    auto back = keel::saga_state_from_string(keel::to_string(s));
    ASSERT_THAT(back, IsOk());
    EXPECT_EQ(*back, s);
  }
  EXPECT_EQ(keel::to_string(saga_state::needs_intervention), "needs_intervention");
  EXPECT_THAT(keel::saga_state_from_string("runing"), FailedWith(keel::code::invalid_argument));
  EXPECT_TRUE(keel::is_terminal(saga_state::rolled_back));
  EXPECT_FALSE(keel::is_terminal(saga_state::compensating));
}

TEST(WriteBatch, BuildsOperationsInOrder) {
  write_batch b;
  EXPECT_TRUE(b.empty());
  b.put_saga(keel_test::sample_saga("x"))
      .append_event("s", "t", "n", 2, "{\"a\":1}", 9)
      .remove_dlq(3)
      .release_lease("l", "o");
  ASSERT_EQ(b.size(), 4u);
  EXPECT_TRUE(std::holds_alternative<op::put_saga>(b.ops()[0]));
  auto& e = std::get<op::append_event>(b.ops()[1]).event;
  EXPECT_EQ(e.stream, "s");
  EXPECT_EQ(e.name, "n");
  EXPECT_EQ(e.attempt, 2u);
  EXPECT_EQ(e.detail, "{\"a\":1}");
  EXPECT_EQ(e.at, 9);
  EXPECT_EQ(std::get<op::remove_dlq>(b.ops()[2]).id, 3u);
  EXPECT_EQ(std::get<op::release_lease>(b.ops()[3]).owner, "o");
}

} // namespace
