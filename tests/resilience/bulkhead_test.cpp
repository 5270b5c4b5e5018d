// keel::bulkhead and keel::keyed_bulkhead: rejection, FIFO admission, max_wait
// with a fake clock, per-key isolation (checked on counts), occupancy and the
// JSON reader. No test sleeps or asserts on durations.

#include "keel/resilience/bulkhead.hpp"

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <boost/json/parse.hpp>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "keel/testing/matchers.hpp"

#include "fake_clock.hpp"

namespace {

using namespace std::chrono_literals;
using keel::admission;
using keel::code;
using keel::resilience_code;
using keel::testing::FailedWith;
using keel::testing::IsOk;
using ::testing::HasSubstr;

using keel_test::fake_clock;

keel::bulkhead_config cfg(uint32_t concurrent, uint32_t queued,
                          std::chrono::nanoseconds wait = 0ns) {
  keel::bulkhead_config c;
  c.name = "db";
  c.max_concurrent = concurrent;
  c.max_queued = queued;
  c.max_wait = wait;
  return c;
}

/// Records what each waiter got, by index.
struct waiters {
  std::vector<keel::permit> permits;
  std::vector<keel::error> refusals;
  std::vector<int> order; // admission order

  // Releasing a permit may admit another waiter, whose callback appends here:
  // release while the vectors are still alive.
  ~waiters() {
    while (!permits.empty()) {
      auto held = std::move(permits);
      permits.clear();
    }
  }

  keel::bulkhead_waiter make(int id) {
    return [this, id](keel::expected<keel::permit> p) {
      if (p) {
        order.push_back(id);
        permits.push_back(std::move(*p));
      } else {
        refusals.push_back(p.error());
      }
    };
  }
};

TEST(Bulkhead, TryAcquireRefusesAtOnceWhenFullNamingBulkheadAndKey) {
  keel::bulkhead b{cfg(2, 10), "acme"};
  auto p1 = b.try_acquire();
  auto p2 = b.try_acquire();
  ASSERT_THAT(p1, IsOk());
  ASSERT_THAT(p2, IsOk());
  auto p3 = b.try_acquire();
  EXPECT_THAT(p3, FailedWith(resilience_code::bulkhead_full,
                             HasSubstr("bulkhead db for key acme full: 2 of 2 in use")));
  EXPECT_THAT(p3, FailedWith(code::resource_exhausted)) << "canonical: retry later";
  auto s = b.stats();
  EXPECT_EQ(s.in_use, 2u);
  EXPECT_EQ(s.admitted, 2u);
  EXPECT_EQ(s.rejected, 1u);
}

TEST(Bulkhead, PermitReleasesOnDestructionAndMoves) {
  keel::bulkhead b{cfg(1, 0)};
  {
    auto p = b.try_acquire();
    ASSERT_TRUE(p);
    keel::permit moved = std::move(*p);
    EXPECT_FALSE(p->valid());
    EXPECT_TRUE(moved.valid());
    EXPECT_EQ(b.stats().in_use, 1u);
    EXPECT_FALSE(b.try_acquire());
  }
  EXPECT_EQ(b.stats().in_use, 0u);
  auto p = b.try_acquire();
  ASSERT_TRUE(p);
  p->release();
  p->release(); // idempotent
  EXPECT_EQ(b.stats().in_use, 0u);
}

TEST(Bulkhead, PermitMayOutliveItsBulkhead) {
  std::optional<keel::permit> kept;
  {
    keel::bulkhead b{cfg(1, 0)};
    auto p = b.try_acquire();
    ASSERT_TRUE(p);
    kept = std::move(*p);
  }
  kept.reset(); // releases into the shared state: no use after free (ASan)
}

TEST(Bulkhead, WaitersAreAdmittedInArrivalOrder) {
  keel::bulkhead b{cfg(1, 8)};
  waiters w;
  ASSERT_EQ(b.acquire(w.make(0)), admission::admitted);
  for (int i = 1; i <= 8; ++i)
    ASSERT_EQ(b.acquire(w.make(i)), admission::queued);
  EXPECT_EQ(b.stats().queued, 8u);
  EXPECT_THAT(b.try_acquire(), FailedWith(resilience_code::bulkhead_full))
      << "try_acquire does not overtake waiters";
  // Release the holder each time: the next in line gets the slot.
  for (int i = 0; i < 8; ++i) {
    ASSERT_EQ(w.permits.size(), 1u);
    auto p = std::move(w.permits.back());
    w.permits.clear();
    p.release();
  }
  EXPECT_EQ(w.order, (std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7, 8}));
  EXPECT_EQ(b.stats().queued, 0u);
  EXPECT_EQ(b.stats().in_use, 1u);
}

TEST(Bulkhead, FullQueueRefusesAtOnce) {
  keel::bulkhead b{cfg(1, 2), "t1"};
  waiters w;
  EXPECT_EQ(b.acquire(w.make(0)), admission::admitted);
  EXPECT_EQ(b.acquire(w.make(1)), admission::queued);
  EXPECT_EQ(b.acquire(w.make(2)), admission::queued);
  EXPECT_EQ(b.acquire(w.make(3)), admission::rejected);
  ASSERT_EQ(w.refusals.size(), 1u);
  EXPECT_THAT(w.refusals[0], FailedWith(resilience_code::bulkhead_full,
                                        HasSubstr("1 of 1 in use, 2 of 2 queued")));
  auto s = b.stats();
  EXPECT_EQ(s.queued, 2u);
  EXPECT_EQ(s.rejected, 1u);
}

TEST(Bulkhead, WaitersOlderThanMaxWaitAreRefused) {
  fake_clock clock;
  keel::bulkhead b{cfg(1, 4, 100ms), "k", clock.fn()};
  waiters w;
  b.acquire(w.make(0));
  b.acquire(w.make(1));
  clock.advance(60ms);
  b.acquire(w.make(2));
  EXPECT_EQ(b.expire(clock.now()), 0u);
  clock.advance(40ms); // waiter 1: 100 ms, waiter 2: 40 ms
  EXPECT_EQ(b.expire(), 1u);
  ASSERT_EQ(w.refusals.size(), 1u);
  EXPECT_THAT(w.refusals[0],
              FailedWith(resilience_code::bulkhead_full, HasSubstr("(max_wait 100 ms)")));
  // A hand-over skips waiters that are out of time, without anyone calling expire.
  b.acquire(w.make(3));
  clock.advance(70ms);              // waiter 2: 110 ms, waiter 3: 70 ms
  auto held = std::move(w.permits); // the callback appends to w.permits
  held.clear();                     // releases waiter 0's slot
  EXPECT_EQ(w.order, (std::vector<int>{0, 3}));
  EXPECT_EQ(w.refusals.size(), 2u);
  auto s = b.stats();
  EXPECT_EQ(s.expired, 2u);
  EXPECT_EQ(s.rejected, 2u);
  EXPECT_EQ(s.queued, 0u);
  EXPECT_EQ(s.in_use, 1u);
}

TEST(Bulkhead, CallbackThatReleasesAtOnceDoesNotRecurse) {
  constexpr int n = 20'000; // deep enough to overflow the stack if handed over recursively
  keel::bulkhead b{cfg(1, n)};
  auto first = b.try_acquire();
  ASSERT_TRUE(first);
  int admitted = 0;
  for (int i = 0; i < n; ++i)
    ASSERT_EQ(b.acquire([&](keel::expected<keel::permit> p) {
      ASSERT_TRUE(p);
      ++admitted; // `p` is dropped here: the slot goes to the next waiter
    }),
              admission::queued);
  first->release();
  EXPECT_EQ(admitted, n);
  EXPECT_EQ(b.stats().in_use, 0u);
  EXPECT_EQ(b.stats().admitted, static_cast<uint64_t>(n) + 1);
}

TEST(Bulkhead, DestroyingTheBulkheadRefusesItsWaiters) {
  waiters w;
  {
    keel::bulkhead b{cfg(1, 2)};
    b.acquire(w.make(0));
    b.acquire(w.make(1));
  }
  ASSERT_EQ(w.refusals.size(), 1u);
  EXPECT_THAT(w.refusals[0], FailedWith(resilience_code::bulkhead_full, HasSubstr("shut down")));
}

TEST(KeyedBulkhead, AFloodOnOneTenantLeavesAnotherUnaffected) {
  keel::keyed_bulkhead tenants{cfg(4, 8)};
  waiters flood;
  // Tenant A: 1000 requests, none finishing: 4 run, 8 wait, the rest are refused.
  for (int i = 0; i < 1000; ++i)
    tenants.acquire("A", flood.make(i));
  // Tenant B: 200 requests, each finishing before the next.
  int b_ok = 0;
  for (int i = 0; i < 200; ++i) {
    auto p = tenants.try_acquire("B");
    b_ok += p.has_value();
  }
  EXPECT_EQ(b_ok, 200) << "every request of B admitted";
  auto a = tenants.stats("A");
  auto b = tenants.stats("B");
  EXPECT_EQ(a.in_use, 4u);
  EXPECT_EQ(a.queued, 8u);
  EXPECT_EQ(a.rejected, 988u);
  EXPECT_EQ(b.admitted, 200u);
  EXPECT_EQ(b.rejected, 0u);
  EXPECT_EQ(b.in_use, 0u);
  for (const auto& e : flood.refusals)
    EXPECT_THAT(e, FailedWith(resilience_code::bulkhead_full, HasSubstr("key A")));
  auto snap = tenants.snapshot();
  EXPECT_EQ(snap.size(), 2u);
  EXPECT_EQ(snap.at("A").rejected, 988u);
}

TEST(KeyedBulkhead, OverridesAndTrim) {
  keel::keyed_bulkhead heads{cfg(1, 0)};
  heads.set_override("big", cfg(3, 0));
  std::vector<keel::permit> held;
  for (int i = 0; i < 3; ++i) {
    auto p = heads.try_acquire("big");
    ASSERT_TRUE(p) << i;
    held.push_back(std::move(*p));
  }
  EXPECT_FALSE(heads.try_acquire("big"));
  {
    auto p = heads.try_acquire("small");
    ASSERT_TRUE(p);
    EXPECT_FALSE(heads.try_acquire("small"));
  }
  EXPECT_EQ(heads.stats("never").admitted, 0u);
  EXPECT_EQ(heads.size(), 2u);
  EXPECT_EQ(heads.trim(), 1u) << "only the idle key goes";
  EXPECT_EQ(heads.size(), 1u);
  held.clear();
  EXPECT_EQ(heads.trim(), 1u);
  EXPECT_EQ(heads.size(), 0u);
}

TEST(KeyedBulkhead, ExpireWalksEveryKey) {
  fake_clock clock;
  keel::keyed_bulkhead heads{cfg(1, 1, 10ms), clock.fn()};
  waiters w;
  for (auto k : {"a", "b", "c"}) {
    heads.acquire(k, w.make(0));
    heads.acquire(k, w.make(1));
  }
  clock.advance(10ms);
  EXPECT_EQ(heads.expire(clock.now()), 3u);
  EXPECT_EQ(w.refusals.size(), 3u);
}

TEST(BulkheadJson, ReadsEveryField) {
  auto c = keel::bulkhead_config_from_json_string(
      R"({"name": "pay", "max_concurrent": 8, "max_queued": 32, "max_wait_ms": 250})");
  ASSERT_THAT(c, IsOk());
  EXPECT_EQ(c->name, "pay");
  EXPECT_EQ(c->max_concurrent, 8u);
  EXPECT_EQ(c->max_queued, 32u);
  EXPECT_EQ(c->max_wait, 250ms);
  auto d = keel::bulkhead_config_from_json_string("{}");
  ASSERT_THAT(d, IsOk());
  EXPECT_EQ(d->max_concurrent, keel::bulkhead_config{}.max_concurrent);
}

TEST(BulkheadJson, ErrorsNameTheField) {
  for (auto [json, message] : {
           std::pair{R"({"max_concurrent": 0})", "bulkhead.max_concurrent"},
           std::pair{R"({"max_queued": -1})", "bulkhead.max_queued"},
           std::pair{R"({"max_wait_ms": "soon"})", "bulkhead.max_wait_ms"},
           std::pair{R"({"name": 3})", "bulkhead.name"},
           std::pair{R"({"size": 3})", "bulkhead: unknown field 'size'"},
           std::pair{R"([1])", "bulkhead: expected an object"},
           std::pair{R"({)", "bulkhead: invalid JSON"},
       })
    EXPECT_THAT(keel::bulkhead_config_from_json_string(json),
                FailedWith(code::invalid_argument, HasSubstr(message)))
        << json;
}

} // namespace
