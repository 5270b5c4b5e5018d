// Choreographed sagas: participants on the bus, the coordinator watching,
// persisting, timing out and compensating (in-memory journal, one test with
// SQLite).

#include "keel/saga/choreography.hpp"

#include <algorithm>
#include <filesystem>
#include <optional>
#include <unistd.h>

#include <boost/json/parse.hpp>

#include "choreography_helpers.hpp"
#include "keel/store/memory_journal.hpp"
#include "keel/store/sqlite_journal.hpp"
#include "keel/testing/matchers.hpp"

namespace {

using namespace keel_test::choreo;
using keel::saga_state;
using keel::saga::choreography;
using keel::saga::choreography_coordinator;
using keel::saga::choreography_step;
using keel::testing::FailedWith;
using keel::testing::IsOk;
using ::testing::HasSubstr;

/// order: a -> b -> c, all compensatable, conventional event names.
choreography order_def(std::chrono::milliseconds step_timeout = 10s) {
  choreography def{"order", "orders", "order.placed"};
  def.step(choreography_step::conventional("a", step_timeout))
      .step(choreography_step::conventional("b", step_timeout))
      .step(choreography_step::conventional("c", step_timeout))
      .compensation_timeout(10s)
      .compensation_attempts(3)
      .rollback_deadline(60s);
  return def;
}

size_t count_type(const std::vector<keel::store::event_record>& h, std::string_view type) {
  return static_cast<size_t>(
      std::count_if(h.begin(), h.end(), [&](const auto& e) { return e.type == type; }));
}

class Choreography : public ::testing::Test {
protected:
  config cfg;
  caf::actor_system sys{cfg};
  caf::actor bus = keel::bus::spawn_event_bus(sys);
  std::shared_ptr<keel::store::journal> journal = keel::store::make_memory_journal();
  std::shared_ptr<probe> seen = std::make_shared<probe>();
  std::vector<caf::actor> participants;

  ~Choreography() override {
    for (auto& p : participants)
      caf::anon_send_exit(p, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(bus, caf::exit_reason::user_shutdown);
  }

  /// Spawns a participant and waits until it is subscribed.
  caf::actor add(participant_spec spec) {
    auto topic = spec.topic;
    auto p = sys.spawn(participant, bus, std::move(spec), seen);
    caf::scoped_actor self{sys};
    self->request(bus, 10s, keel::bus::subscribe_atom::value, topic, p)
        .receive([] {}, [](caf::error&) { ADD_FAILURE() << "subscribe failed"; });
    participants.push_back(p);
    return p;
  }

  /// a, b, c chained on their predecessor's done event.
  void chain(forward_mode a = forward_mode::succeed, forward_mode b = forward_mode::succeed,
             forward_mode c = forward_mode::succeed) {
    add({.step = "a", .react_to = "order.placed", .mode = a});
    add({.step = "b", .react_to = "a.done", .mode = b});
    add({.step = "c", .react_to = "b.done", .mode = c});
  }

  keel::saga::coordinator_config owner(std::string name) {
    keel::saga::coordinator_config c;
    c.owner = std::move(name);
    c.lease_retry = 50ms;
    return c;
  }

  choreography_coordinator start(std::vector<choreography> defs,
                                 keel::saga::coordinator_config c = {}) {
    if (c.owner.empty())
      c.owner = "test-1";
    auto coord = choreography_coordinator::start(sys, journal, bus, std::move(defs), c);
    EXPECT_THAT(coord, IsOk());
    return std::move(*coord);
  }

  std::vector<keel::store::event_record> history(const std::string& id) {
    auto h = journal->events(keel::store::saga_stream(id));
    EXPECT_THAT(h, IsOk());
    return h ? *h : std::vector<keel::store::event_record>{};
  }

  bool history_has(const std::string& id, std::string_view type, size_t n = 1) {
    return count_type(history(id), type) >= n;
  }
};

// -- definitions ------------------------------------------------------------------

TEST(ChoreographyDefinition, Validates) {
  EXPECT_THAT(order_def().validate(), IsOk());
  {
    choreography d{"k", "t", "start"};
    EXPECT_THAT(d.validate(), FailedWith(keel::code::invalid_argument, HasSubstr("no steps")));
  }
  {
    auto d = order_def();
    d.step(choreography_step::conventional("a"));
    EXPECT_THAT(d.validate(), FailedWith(keel::code::invalid_argument, HasSubstr("'a'")));
  }
  {
    choreography d{"k", "t", "start"};
    d.step({.name = "x", .done = ""});
    EXPECT_THAT(d.validate(), FailedWith(keel::code::invalid_argument, HasSubstr("done")));
  }
  {
    choreography d{"k", "t", "start"};
    d.step({.name = "notify", .done = "notify.done"}).step(choreography_step::conventional("a"));
    EXPECT_THAT(d.validate(), FailedWith(keel::code::invalid_argument, HasSubstr("come last")));
  }
  {
    choreography d{"k", "t", "start"};
    d.step(choreography_step::conventional("a")).step({.name = "notify", .done = "notify.done"});
    EXPECT_THAT(d.validate(), IsOk());
  }
  {
    choreography d{"k", "t", "start"};
    d.step({.name = "x", .done = "start"});
    EXPECT_THAT(d.validate(), FailedWith(keel::code::invalid_argument, HasSubstr("'start'")));
  }
  {
    choreography d{"k", "t", "start"};
    d.step({.name = "x", .done = "x.done", .compensate = "x.undo"});
    EXPECT_THAT(d.validate(), FailedWith(keel::code::invalid_argument, HasSubstr("together")));
  }
  {
    auto d = order_def();
    d.compensation_attempts(0);
    EXPECT_THAT(d.validate(), FailedWith(keel::code::invalid_argument));
  }
}

TEST_F(Choreography, StartRejectsBadDefinitionsAndDuplicateKinds) {
  EXPECT_THAT(choreography_coordinator::start(sys, journal, bus, {choreography{"k", "t", "s"}}),
              FailedWith(keel::code::invalid_argument));
  EXPECT_THAT(choreography_coordinator::start(sys, journal, bus, {order_def(), order_def()}),
              FailedWith(keel::code::invalid_argument, HasSubstr("twice")));
}

// -- forward ------------------------------------------------------------------------

TEST_F(Choreography, HappyPathCompletes) {
  chain();
  auto coord = start({order_def()});
  auto out = coord.run("order", "o-1", keel::saga::data{}.set("amount", 42), 10s);
  ASSERT_THAT(out, IsOk());
  EXPECT_EQ(out->state, saga_state::completed);
  EXPECT_FALSE(out->failure);
  // The done events' payloads were merged into the saga data.
  EXPECT_EQ(out->data.get<int>("amount").value_or(0), 42);
  EXPECT_EQ(out->data.get<std::string>("c_ref").value_or(""), "o-1/c");
  auto h = history("o-1");
  EXPECT_EQ(h.front().type, "started");
  EXPECT_EQ(count_type(h, "event_received"), 3u);
  EXPECT_EQ(count_type(h, "step_completed"), 3u);
  EXPECT_EQ(h.back().type, "completed");
  EXPECT_TRUE(seen->compensations_copy().empty());
  auto rec = journal->saga("o-1");
  ASSERT_TRUE(rec && *rec);
  EXPECT_EQ((*rec)->mode, "choreographed");
  EXPECT_EQ((*rec)->completed, (std::vector<std::string>{"a", "b", "c"}));
  // The lease is released at the end.
  auto lease = journal->lease(keel::store::saga_lease("o-1"));
  ASSERT_THAT(lease, IsOk());
  EXPECT_FALSE(lease->has_value());
  EXPECT_EQ(coord.in_flight(), 0u);
  // Beginning it again is refused.
  EXPECT_THAT(coord.begin("order", "o-1"), FailedWith(keel::code::already_exists));
  EXPECT_THAT(coord.begin("nope", "o-2"), FailedWith(keel::code::not_found));
}

TEST_F(Choreography, FailedEventCompensatesCompletedStepsInReverseOrder) {
  chain(forward_mode::succeed, forward_mode::succeed, forward_mode::fail);
  auto coord = start({order_def()});
  auto out = coord.run("order", "o-1", {}, 10s);
  ASSERT_THAT(out, IsOk());
  EXPECT_EQ(out->state, saga_state::rolled_back);
  EXPECT_THAT(out->failure, FailedWith(keel::code::aborted, HasSubstr("out of stock")));
  EXPECT_EQ(seen->compensations_copy(), (std::vector<std::string>{"b", "a"}));
  auto h = history("o-1");
  EXPECT_EQ(count_type(h, "step_failed"), 1u);
  EXPECT_EQ(count_type(h, "compensation_requested"), 2u);
  EXPECT_EQ(count_type(h, "compensation_completed"), 2u);
  EXPECT_EQ(h.back().type, "rolled_back");
  // Compensation event ids are derived from the saga and the step.
  EXPECT_EQ(seen->compensation_ids_copy(),
            (std::vector<std::string>{"o-1/b/compensate", "o-1/a/compensate"}));
}

TEST_F(Choreography, MissingDoneEventTimesOutAndCompensates) {
  chain(forward_mode::succeed, forward_mode::succeed, forward_mode::silent);
  auto def = order_def();
  choreography quick{"order", "orders", "order.placed"};
  quick.step(choreography_step::conventional("a"))
      .step(choreography_step::conventional("b"))
      .step(choreography_step::conventional("c", 100ms)); // c never answers
  auto coord = start({quick});
  auto out = coord.run("order", "o-1", {}, 10s);
  ASSERT_THAT(out, IsOk());
  EXPECT_EQ(out->state, saga_state::rolled_back);
  EXPECT_THAT(out->failure, FailedWith(keel::code::deadline_exceeded, HasSubstr("'c'")));
  EXPECT_EQ(seen->compensations_copy(), (std::vector<std::string>{"b", "a"}));
  auto h = history("o-1");
  EXPECT_EQ(count_type(h, "timeout"), 1u);
  EXPECT_EQ(h.back().type, "rolled_back");
}

TEST_F(Choreography, UnacknowledgedCompensationIsRetriedThenNeedsIntervention) {
  auto mute = std::make_shared<std::atomic<bool>>(false);
  add({.step = "a", .react_to = "order.placed"});
  add({.step = "b", .react_to = "a.done", .ack = mute}); // never acknowledges
  add({.step = "c", .react_to = "b.done", .mode = forward_mode::fail});
  auto def = order_def();
  def.compensation_timeout(50ms).compensation_attempts(3);
  auto coord = start({def});
  auto out = coord.run("order", "o-1", {}, 10s);
  ASSERT_THAT(out, IsOk());
  EXPECT_EQ(out->state, saga_state::needs_intervention);
  EXPECT_THAT(out->reason, HasSubstr("'b'"));
  EXPECT_THAT(out->reason, HasSubstr("3 attempts"));
  // Three sends of b's compensation, one id; then a is still compensated.
  EXPECT_EQ(seen->compensations_copy(), (std::vector<std::string>{"b", "b", "b", "a"}));
  auto ids = seen->compensation_ids_copy();
  EXPECT_EQ(ids[0], ids[1]);
  EXPECT_EQ(ids[1], ids[2]);
  EXPECT_EQ(seen->undone_copy(), (std::vector<std::string>{"b", "a"}));
  auto h = history("o-1");
  EXPECT_EQ(count_type(h, "compensation_failed"), 1u);
  EXPECT_EQ(count_type(h, "compensation_completed"), 1u);
  EXPECT_EQ(h.back().type, "needs_intervention");
  auto rec = journal->saga("o-1");
  ASSERT_TRUE(rec && *rec);
  EXPECT_THAT((*rec)->compensation_failure, FailedWith(keel::code::deadline_exceeded));
}

TEST_F(Choreography, RollbackDeadlineEndsInNeedsIntervention) {
  auto mute = std::make_shared<std::atomic<bool>>(false);
  add({.step = "a", .react_to = "order.placed"});
  add({.step = "b", .react_to = "a.done", .ack = mute});
  add({.step = "c", .react_to = "b.done", .mode = forward_mode::fail});
  auto def = order_def();
  def.compensation_timeout(10s).rollback_deadline(100ms);
  auto coord = start({def});
  auto out = coord.run("order", "o-1", {}, 10s);
  ASSERT_THAT(out, IsOk());
  EXPECT_EQ(out->state, saga_state::needs_intervention);
  EXPECT_THAT(out->reason, HasSubstr("rollback deadline"));
}

TEST_F(Choreography, DuplicateEventsAreIgnored) {
  add({.step = "a", .react_to = "order.placed", .duplicate_done = true});
  add({.step = "b", .react_to = "a.done"});
  add({.step = "c", .react_to = "b.done"});
  auto coord = start({order_def()});
  auto out = coord.run("order", "o-1", {}, 10s);
  ASSERT_THAT(out, IsOk());
  EXPECT_EQ(out->state, saga_state::completed);
  // The duplicate may arrive before or after the end: either way it is
  // recorded as ignored and changes nothing.
  EXPECT_TRUE(eventually([&] { return history_has("o-1", "event_ignored"); }));
  auto h = history("o-1");
  EXPECT_EQ(count_type(h, "step_completed"), 3u);
  EXPECT_EQ(seen->forward_count(), 3u);
}

TEST_F(Choreography, EventsForUnknownSagasAreRecordedAndIgnored) {
  chain();
  auto coord = start({order_def()});
  keel::bus::publish(bus, keel::bus::make_event("orders", "a.done", "ghost"));
  EXPECT_TRUE(eventually([&] {
    auto h = journal->events("bus/orders");
    return h && !h->empty();
  }));
  auto h = journal->events("bus/orders");
  ASSERT_THAT(h, IsOk());
  EXPECT_EQ(h->front().type, "event_ignored");
  EXPECT_THAT(h->front().detail, HasSubstr("unknown saga"));
  // The coordinator still works.
  auto out = coord.run("order", "o-1", {}, 10s);
  ASSERT_THAT(out, IsOk());
  EXPECT_EQ(out->state, saga_state::completed);
  EXPECT_THAT(coord.wait("ghost", 1s), FailedWith(keel::code::not_found));
}

TEST_F(Choreography, MalformedPayloadIsRecordedNotFatal) {
  // Only a (silent) listens: the test plays the other participants.
  add({.step = "a", .react_to = "order.placed", .mode = forward_mode::silent});
  auto coord = start({order_def()});
  ASSERT_THAT(coord.begin("order", "o-1"), IsOk());
  EXPECT_TRUE(eventually([&] { return seen->forward_count() == 1; }));
  keel::bus::publish(bus, keel::bus::make_event("orders", "a.done", "o-1", "{not json"));
  EXPECT_TRUE(eventually([&] { return history_has("o-1", "event_rejected"); }));
  auto h = history("o-1");
  auto rejected =
      std::find_if(h.begin(), h.end(), [](const auto& e) { return e.type == "event_rejected"; });
  ASSERT_NE(rejected, h.end());
  EXPECT_THAT(rejected->detail, HasSubstr("malformed JSON payload"));
  EXPECT_THAT(rejected->detail, HasSubstr("invalid_argument"));
  EXPECT_EQ(count_type(h, "step_completed"), 0u);
  // Good events afterwards move the saga on.
  for (const auto* type : {"a.done", "b.done", "c.done"})
    keel::bus::publish(bus, keel::bus::make_event("orders", type, "o-1"));
  auto out = coord.wait("o-1", 10s);
  ASSERT_THAT(out, IsOk());
  EXPECT_EQ(out->state, saga_state::completed);
}

// -- queries ------------------------------------------------------------------------

TEST_F(Choreography, HistoryAndListQueries) {
  chain();
  auto coord = start({order_def()});
  ASSERT_THAT(coord.run("order", "o-1", {}, 10s), IsOk());
  ASSERT_THAT(coord.run("order", "o-2", {}, 10s), IsOk());
  keel::store::saga_filter f;
  f.state = saga_state::completed;
  auto done = coord.list(f);
  ASSERT_THAT(done, IsOk());
  ASSERT_EQ(done->size(), 2u);
  EXPECT_EQ((*done)[0].id, "o-1");
  EXPECT_EQ((*done)[1].mode, "choreographed");
  keel::store::saga_filter open;
  open.unfinished_only = true;
  EXPECT_TRUE(coord.list(open)->empty());
  auto h = coord.history("o-2");
  ASSERT_THAT(h, IsOk());
  ASSERT_FALSE(h->empty());
  for (size_t i = 1; i < h->size(); ++i)
    EXPECT_LT((*h)[i - 1].seq, (*h)[i].seq);
  auto st = coord.status("o-2");
  ASSERT_THAT(st, IsOk());
  EXPECT_EQ(st->state, saga_state::completed);
  EXPECT_THAT(coord.status("none"), FailedWith(keel::code::not_found));
  // Every history detail is a JSON object.
  for (const auto& e : *h)
    EXPECT_TRUE(boost::json::parse(e.detail).is_object()) << e.type << ": " << e.detail;
}

// -- crash-resume and leases -----------------------------------------------------

TEST_F(Choreography, ResumesRunningSagaAfterRestart) {
  chain(forward_mode::succeed, forward_mode::silent);
  {
    auto coord = start({order_def()});
    ASSERT_THAT(coord.begin("order", "o-1"), IsOk());
    ASSERT_TRUE(eventually([&] { return history_has("o-1", "step_completed"); }));
    coord.stop(); // mid-saga: a done, b outstanding
  }
  auto rec = journal->saga("o-1");
  ASSERT_TRUE(rec && *rec);
  EXPECT_EQ((*rec)->state, saga_state::running);
  EXPECT_EQ((*rec)->step, 1);
  auto coord = start({order_def()});
  EXPECT_EQ(coord.resumed(), (std::vector<std::string>{"o-1"}));
  EXPECT_EQ(coord.in_flight(), 1u);
  // b finally reports; c reacts; the new coordinator finishes the saga.
  keel::bus::publish(bus, keel::bus::make_event("orders", "b.done", "o-1"));
  auto out = coord.wait("o-1", 10s);
  ASSERT_THAT(out, IsOk());
  EXPECT_EQ(out->state, saga_state::completed);
  EXPECT_EQ(count_type(history("o-1"), "resumed"), 1u);
}

TEST_F(Choreography, ResumedStepTimeoutIsArmedAgain) {
  chain(forward_mode::succeed, forward_mode::silent);
  auto def = order_def();
  {
    auto coord = start({def});
    ASSERT_THAT(coord.begin("order", "o-1"), IsOk());
    ASSERT_TRUE(eventually([&] { return history_has("o-1", "step_completed"); }));
    coord.stop();
  }
  choreography quick{"order", "orders", "order.placed"};
  quick.step(choreography_step::conventional("a"))
      .step(choreography_step::conventional("b", 100ms))
      .step(choreography_step::conventional("c"));
  auto coord = start({quick});
  auto out = coord.wait("o-1", 10s);
  ASSERT_THAT(out, IsOk());
  EXPECT_EQ(out->state, saga_state::rolled_back);
  EXPECT_EQ(seen->compensations_copy(), (std::vector<std::string>{"a"}));
}

TEST_F(Choreography, ResumeReemitsPendingCompensation) {
  auto ack_b = std::make_shared<std::atomic<bool>>(false);
  add({.step = "a", .react_to = "order.placed"});
  add({.step = "b", .react_to = "a.done", .ack = ack_b});
  add({.step = "c", .react_to = "b.done", .mode = forward_mode::fail});
  auto def = order_def(); // compensation timeout 10 s: no retry during the test
  {
    auto coord = start({def});
    ASSERT_THAT(coord.begin("order", "o-1"), IsOk());
    ASSERT_TRUE(eventually([&] { return seen->compensations_copy().size() == 1; }));
    coord.stop(); // b's compensation requested, not acknowledged
  }
  auto rec = journal->saga("o-1");
  ASSERT_TRUE(rec && *rec);
  EXPECT_EQ((*rec)->state, saga_state::compensating);
  ack_b->store(true);
  auto coord = start({def});
  EXPECT_EQ(coord.resumed(), (std::vector<std::string>{"o-1"}));
  auto out = coord.wait("o-1", 10s);
  ASSERT_THAT(out, IsOk());
  EXPECT_EQ(out->state, saga_state::rolled_back);
  EXPECT_THAT(out->failure, FailedWith(keel::code::aborted));
  // b's request again, with the same id (b undid once, acknowledged twice).
  EXPECT_EQ(seen->compensations_copy(), (std::vector<std::string>{"b", "b", "a"}));
  auto ids = seen->compensation_ids_copy();
  EXPECT_EQ(ids[0], ids[1]);
  EXPECT_EQ(seen->undone_copy(), (std::vector<std::string>{"b", "a"}));
}

TEST_F(Choreography, LeaseKeepsASecondOwnerOffARunningSaga) {
  chain(forward_mode::succeed, forward_mode::silent);
  auto first = start({order_def()}, owner("owner-a"));
  ASSERT_THAT(first.begin("order", "o-1"), IsOk());
  ASSERT_TRUE(eventually([&] { return history_has("o-1", "step_completed"); }));
  auto second = start({order_def()}, owner("owner-b"));
  EXPECT_TRUE(second.resumed().empty());
  EXPECT_EQ(second.in_flight(), 0u);
  EXPECT_THAT(second.wait("o-1", 1s), FailedWith(keel::code::unavailable));
  // The first owner keeps running it (the second retries the lease meanwhile).
  keel::bus::publish(bus, keel::bus::make_event("orders", "b.done", "o-1"));
  auto out = first.wait("o-1", 10s);
  ASSERT_THAT(out, IsOk());
  EXPECT_EQ(out->state, saga_state::completed);
  auto h = history("o-1");
  EXPECT_EQ(count_type(h, "resumed"), 0u);
  EXPECT_EQ(count_type(h, "step_completed"), 3u);
  EXPECT_EQ(second.in_flight(), 0u);
}

TEST_F(Choreography, SecondOwnerTakesOverOnceTheLeaseIsReleased) {
  chain(forward_mode::succeed, forward_mode::silent);
  auto first = start({order_def()}, owner("owner-a"));
  ASSERT_THAT(first.begin("order", "o-1"), IsOk());
  ASSERT_TRUE(eventually([&] { return history_has("o-1", "step_completed"); }));
  auto second = start({order_def()}, owner("owner-b"));
  EXPECT_TRUE(second.resumed().empty());
  first.stop(); // releases the lease
  ASSERT_TRUE(eventually([&] { return second.in_flight() == 1; }));
  keel::bus::publish(bus, keel::bus::make_event("orders", "b.done", "o-1"));
  auto out = second.wait("o-1", 10s);
  ASSERT_THAT(out, IsOk());
  EXPECT_EQ(out->state, saga_state::completed);
}

// -- SQLite ---------------------------------------------------------------------------

TEST_F(Choreography, WorksOnTheSqliteJournalAcrossRestarts) {
  auto path = std::filesystem::temp_directory_path()
              / ("keel_choreo_" + std::to_string(::getpid()) + ".journal");
  std::filesystem::remove(path);
  keel::store::sqlite_options opts;
  opts.level = keel::store::durability::off;
  {
    auto j = keel::store::open_sqlite_journal(path.string(), opts);
    ASSERT_THAT(j, IsOk());
    journal = *j;
    chain(forward_mode::succeed, forward_mode::succeed, forward_mode::fail);
    auto coord = start({order_def()});
    auto out = coord.run("order", "o-1", {}, 10s);
    ASSERT_THAT(out, IsOk());
    EXPECT_EQ(out->state, saga_state::rolled_back);
    coord.stop();
    journal.reset();
  }
  auto j = keel::store::open_sqlite_journal(path.string(), opts);
  ASSERT_THAT(j, IsOk());
  auto rec = (*j)->saga("o-1");
  ASSERT_TRUE(rec && *rec);
  EXPECT_EQ((*rec)->state, saga_state::rolled_back);
  EXPECT_EQ((*rec)->mode, "choreographed");
  auto h = (*j)->events(keel::store::saga_stream("o-1"));
  ASSERT_THAT(h, IsOk());
  EXPECT_EQ(h->back().type, "rolled_back");
  EXPECT_EQ(seen->compensations_copy(), (std::vector<std::string>{"b", "a"}));
  j->reset();
  std::filesystem::remove(path);
  std::filesystem::remove(path.string() + "-wal");
  std::filesystem::remove(path.string() + "-shm");
}

} // namespace
