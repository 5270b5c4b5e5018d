// Deterministic tests of supervisors and stages on CAF's test coordinator.

#include "fixture.hpp"

#include "keel/testing/matchers.hpp"

#include <atomic>
#include <memory>

using namespace std::chrono_literals;
using keel::testing::supervision_fixture;

namespace {

/// Shared between a test and the instances of a stage it declares.
struct probe {
  int starts = 0;      // factory calls
  int handled = 0;     // messages handled successfully
  std::vector<int> seen; // every value a handler ran on, in order
};

/// A stage doubling ints; throws on negative values, returns an error on 0.
keel::child_spec doubler(std::string id, std::shared_ptr<probe> p) {
  return keel::stage_spec(std::move(id), [p](keel::stage_context&) {
    ++p->starts;
    return caf::behavior{[p](int x) -> caf::result<int> {
      p->seen.push_back(x);
      if (x < 0)
        throw std::runtime_error("negative: " + std::to_string(x));
      if (x == 0)
        return keel::to_caf_error(keel::invalid_argument_error("zero"));
      ++p->handled;
      return x * 2;
    }};
  });
}

class SupervisorTest : public supervision_fixture {};

TEST_F(SupervisorTest, StageAnswersThroughItsStableAddress) {
  auto p = std::make_shared<probe>();
  keel::supervisor_config sc;
  sc.name = "root";
  sc.children.push_back(doubler("d", p));
  auto sup = start(sc);
  auto d = lookup(sup, "d");
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(ask<int>(*d, 21).value(), 42);
  EXPECT_EQ(p->starts, 1);
}

TEST_F(SupervisorTest, ExceptionRestartsInPlaceAndRetriesTheMessage) {
  auto p = std::make_shared<probe>();
  auto rec = std::make_shared<keel::event_recorder>();
  keel::supervisor_config sc;
  sc.name = "root";
  sc.events = rec;
  sc.intensity = {10, 1s};
  sc.children.push_back(doubler("d", p).with_max_attempts(2));
  auto sup = start(sc);
  auto d = lookup(sup, "d").value();
  auto r = ask<int>(d, -1);
  ASSERT_FALSE(r.has_value());
  EXPECT_TRUE(keel::is(r.error(), keel::code::panic)) << keel::to_string(r.error());
  EXPECT_EQ(p->seen, (std::vector<int>{-1, -1})); // tried twice
  EXPECT_EQ(p->starts, 3);                         // first start + 2 restarts
  EXPECT_EQ(lookup(sup, "d").value(), d);          // same address
  EXPECT_EQ(ask<int>(d, 5).value(), 10);
  EXPECT_EQ(rec->count(keel::event_kind::quarantined), 1u);
}

} // namespace
