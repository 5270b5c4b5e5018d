// The payment example's ledger: idempotent operations, compensators robust to
// "never happened", the consistency checker, and fault injection.

#include "payment/faults.hpp"
#include "payment/ledger.hpp"

#include "keel/testing/matchers.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <thread>

#include <unistd.h>

using keel::testing::IsOk;
using keel::testing::IsOkAndHolds;
using testing::HasSubstr;

namespace {

namespace fs = std::filesystem;

class LedgerTest : public testing::Test {
protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path()
           / ("keel-ledger-test-" + std::to_string(::getpid()) + "-"
              + testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    auto l = payment::ledger::open((dir_ / "ledger.db").string());
    ASSERT_THAT(l, IsOk());
    ledger_ = std::move(*l);
  }

  void TearDown() override {
    ledger_.reset();
    fs::remove_all(dir_);
  }

  payment::order_rows rows(const std::string& order) {
    auto o = ledger_->orders();
    EXPECT_THAT(o, IsOk());
    auto i = o->find(order);
    return i == o->end() ? payment::order_rows{} : i->second;
  }

  static keel::store::saga_record saga(std::string id, keel::saga_state s,
                                       std::string reason = {}) {
    keel::store::saga_record r;
    r.id = std::move(id);
    r.kind = "payment";
    r.state = s;
    r.reason = std::move(reason);
    return r;
  }

  void complete(const std::string& order) {
    ASSERT_THAT(ledger_->charge(order + "/charge", order, 100), IsOk());
    ASSERT_THAT(ledger_->reserve(order + "/allocate", order, {{"a", 1}, {"b", 2}}), IsOk());
    ASSERT_THAT(ledger_->ship(order + "/ship", order), IsOk());
    ASSERT_THAT(ledger_->notify(order + "/notify", order), IsOk());
  }

  fs::path dir_;
  std::unique_ptr<payment::ledger> ledger_;
};

TEST_F(LedgerTest, ChargeTwiceWithOneKeyChargesOnce) {
  auto first = ledger_->charge("o1/charge", "o1", 4200);
  ASSERT_THAT(first, IsOk());
  EXPECT_THAT(ledger_->charge("o1/charge", "o1", 4200), IsOkAndHolds(*first));
  auto r = rows("o1");
  EXPECT_EQ(r.payments, 1);
  EXPECT_EQ(r.charged, 4200);
}

TEST_F(LedgerTest, EveryOperationRunTwiceHasTheEffectOfOnce) {
  complete("o1");
  complete("o1");
  auto r = rows("o1");
  EXPECT_EQ(r.payments, 1);
  EXPECT_EQ(r.reservations, 2);
  EXPECT_EQ(r.shipments, 1);
  EXPECT_EQ(r.notifications, 1);
  for (int i = 0; i < 2; ++i) {
    EXPECT_THAT(ledger_->refund("o1/charge/compensate", "o1"), IsOkAndHolds(true));
    EXPECT_THAT(ledger_->release("o1/allocate/compensate", "o1"), IsOk());
    EXPECT_THAT(ledger_->cancel_shipment("o1/ship/compensate", "o1"), IsOk());
  }
  r = rows("o1");
  EXPECT_EQ(r.refunds, 1);
  EXPECT_EQ(r.unreleased, 0);
  EXPECT_EQ(r.uncancelled, 0);
}

TEST_F(LedgerTest, CompensatorsOfWhatNeverHappenedAreNoOps) {
  EXPECT_THAT(ledger_->refund("o9/charge/compensate", "o9"), IsOkAndHolds(false));
  EXPECT_THAT(ledger_->release("o9/allocate/compensate", "o9"), IsOk());
  EXPECT_THAT(ledger_->cancel_shipment("o9/ship/compensate", "o9"), IsOk());
  auto o = ledger_->orders();
  ASSERT_THAT(o, IsOk());
  EXPECT_TRUE(o->empty());
  EXPECT_THAT(ledger_->refunds_per_payment(), IsOkAndHolds(testing::IsEmpty()));
}

TEST_F(LedgerTest, APaymentIsRefundedOnceWhateverTheKey) {
  ASSERT_THAT(ledger_->charge("o1/charge", "o1", 10), IsOk());
  EXPECT_THAT(ledger_->refund("k1", "o1"), IsOkAndHolds(true));
  EXPECT_THAT(ledger_->refund("k2", "o1"), IsOkAndHolds(true));
  EXPECT_EQ(rows("o1").refunds, 1);
}

TEST_F(LedgerTest, ConcurrentCallersShareOneConnection) {
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([this] {
      for (int i = 0; i < 50; ++i) {
        auto id = "o" + std::to_string(i);
        EXPECT_THAT(ledger_->charge(id + "/charge", id, 1), IsOk());
      }
    });
  for (auto& t : threads)
    t.join();
  auto o = ledger_->orders();
  ASSERT_THAT(o, IsOk());
  EXPECT_EQ(o->size(), 50u);
  for (auto& [id, r] : *o)
    EXPECT_EQ(r.payments, 1) << id;
}

TEST_F(LedgerTest, ReopeningKeepsTheRows) {
  complete("o1");
  ledger_.reset();
  auto l = payment::ledger::open((dir_ / "ledger.db").string());
  ASSERT_THAT(l, IsOk());
  ledger_ = std::move(*l);
  EXPECT_EQ(rows("o1").payments, 1);
}

TEST_F(LedgerTest, NotALedgerFileGivesAnErrorNamingIt) {
  auto bad = dir_ / "garbage.db";
  {
    std::FILE* f = std::fopen(bad.c_str(), "wb");
    ASSERT_NE(f, nullptr);
    std::string junk(8192, 'x');
    std::fwrite(junk.data(), 1, junk.size(), f);
    std::fclose(f);
  }
  auto l = payment::ledger::open(bad.string());
  ASSERT_FALSE(l);
  EXPECT_THAT(std::string{l.error().message()}, HasSubstr(bad.string()));
}

// -- consistency checker ----------------------------------------------------------------

TEST_F(LedgerTest, ConsistentLedgerHasNoViolations) {
  complete("done");
  ASSERT_THAT(ledger_->charge("rb/charge", "rb", 5), IsOk());
  ASSERT_THAT(ledger_->reserve("rb/allocate", "rb", {{"a", 1}}), IsOk());
  ASSERT_THAT(ledger_->release("rb/allocate/compensate", "rb"), IsOk());
  ASSERT_THAT(ledger_->refund("rb/charge/compensate", "rb"), IsOk());
  auto rep = payment::check_consistency(*ledger_, {saga("done", keel::saga_state::completed),
                                                   saga("rb", keel::saga_state::rolled_back),
                                                   saga("early", keel::saga_state::rolled_back)});
  ASSERT_THAT(rep, IsOk());
  EXPECT_TRUE(rep->ok()) << rep->to_string();
  EXPECT_EQ(rep->sagas, 3u);
}

TEST_F(LedgerTest, CheckerFindsUnrefundedChargeLeakedReservationAndLiveShipment) {
  ASSERT_THAT(ledger_->charge("rb/charge", "rb", 5), IsOk());
  ASSERT_THAT(ledger_->reserve("rb/allocate", "rb", {{"a", 1}}), IsOk());
  ASSERT_THAT(ledger_->ship("rb/ship", "rb"), IsOk());
  auto rep = payment::check_consistency(*ledger_, {saga("rb", keel::saga_state::rolled_back)});
  ASSERT_THAT(rep, IsOk());
  EXPECT_FALSE(rep->ok());
  auto text = rep->to_string();
  EXPECT_THAT(text, HasSubstr("not refunded"));
  EXPECT_THAT(text, HasSubstr("not released"));
  EXPECT_THAT(text, HasSubstr("shipment is not cancelled"));
  EXPECT_THAT(text, HasSubstr("INCONSISTENT"));
}

TEST_F(LedgerTest, CheckerFindsRefundedCompletedOrder) {
  complete("o1");
  ASSERT_THAT(ledger_->refund("o1/charge/compensate", "o1"), IsOk());
  auto rep = payment::check_consistency(*ledger_, {saga("o1", keel::saga_state::completed)});
  ASSERT_THAT(rep, IsOk());
  ASSERT_EQ(rep->violations.size(), 1u) << rep->to_string();
  EXPECT_THAT(rep->violations[0], HasSubstr("completed but refunded"));
}

TEST_F(LedgerTest, CheckerFindsOrdersTheJournalDoesNotKnow) {
  ASSERT_THAT(ledger_->charge("ghost/charge", "ghost", 5), IsOk());
  auto rep = payment::check_consistency(*ledger_, {});
  ASSERT_THAT(rep, IsOk());
  ASSERT_EQ(rep->violations.size(), 1u);
  EXPECT_THAT(rep->violations[0], HasSubstr("ghost"));
}

TEST_F(LedgerTest, CheckerNotesInterventionsAndFlagsUnfinishedSagas) {
  ASSERT_THAT(ledger_->charge("ni/charge", "ni", 5), IsOk());
  auto rep = payment::check_consistency(
      *ledger_, {saga("ni", keel::saga_state::needs_intervention, "refund failed"),
                 saga("run", keel::saga_state::running)});
  ASSERT_THAT(rep, IsOk());
  ASSERT_EQ(rep->notes.size(), 1u);
  EXPECT_THAT(rep->notes[0], HasSubstr("unrefunded charge"));
  ASSERT_EQ(rep->violations.size(), 1u);
  EXPECT_THAT(rep->violations[0], HasSubstr("not finished"));

  auto lenient =
      payment::check_consistency(*ledger_,
                                 {saga("ni", keel::saga_state::needs_intervention, "refund failed"),
                                  saga("run", keel::saga_state::running)},
                                 {.require_terminal = false});
  ASSERT_THAT(lenient, IsOk());
  EXPECT_THAT(lenient->violations, testing::IsEmpty());

  auto no_reason =
      payment::check_consistency(*ledger_, {saga("ni", keel::saga_state::needs_intervention)});
  ASSERT_THAT(no_reason, IsOk());
  ASSERT_EQ(no_reason->violations.size(), 1u);
  EXPECT_THAT(no_reason->violations[0], HasSubstr("without a reason"));
}

// -- faults ----------------------------------------------------------------------------------

TEST(PaymentFaults, TransientFaultFailsTheFirstCallsOnly) {
  payment::faults f{1};
  f.add({.step = "ship", .compensator = true, .orders = {"o1"}, .times = 2});
  EXPECT_EQ(f.decide("ship", true, "o1").kind, payment::fault_kind::fail);
  EXPECT_EQ(f.decide("ship", false, "o1").kind, payment::fault_kind::none);
  EXPECT_EQ(f.decide("ship", true, "o2").kind, payment::fault_kind::none);
  EXPECT_EQ(f.decide("ship", true, "o1").kind, payment::fault_kind::fail);
  EXPECT_EQ(f.decide("ship", true, "o1").kind, payment::fault_kind::none);
}

TEST(PaymentFaults, ShareIsChosenPerOrderAndReproducible) {
  auto hit = [](uint64_t seed) {
    payment::faults f{seed};
    f.add({.step = "allocate", .share = 0.3, .code = keel::code::resource_exhausted});
    std::vector<bool> out;
    for (int i = 0; i < 1000; ++i)
      out.push_back(f.decide("allocate", false, "o" + std::to_string(i)).kind
                    == payment::fault_kind::fail);
    return out;
  };
  auto a = hit(7);
  EXPECT_EQ(a, hit(7));
  EXPECT_NE(a, hit(8));
  auto n = std::count(a.begin(), a.end(), true);
  EXPECT_GT(n, 230);
  EXPECT_LT(n, 370);
}

TEST(PaymentFaults, LatenciesAddUpAndTheFirstFailureWins) {
  payment::faults f{3};
  f.add({.step = "*",
         .kind = payment::fault_kind::none,
         .latency_min = std::chrono::milliseconds(2)});
  f.add({.step = "charge", .kind = payment::fault_kind::throw_exception, .message = "boom"});
  f.add({.step = "charge",
         .code = keel::code::internal,
         .latency_min = std::chrono::milliseconds(3)});
  auto d = f.decide("charge", false, "o1");
  EXPECT_EQ(d.latency, std::chrono::milliseconds(5));
  EXPECT_EQ(d.kind, payment::fault_kind::throw_exception);
  EXPECT_THAT(std::string{d.err.message()}, HasSubstr("boom"));
  EXPECT_EQ(f.decide("validate", false, "o1").latency, std::chrono::milliseconds(2));
}

} // namespace
