#include "keel/error/format.hpp"

#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "keel/error.hpp"
#include "test_types.hpp"

using keel::error;
using ::testing::HasSubstr;
using ::testing::Not;

namespace {

error row_error(int i) {
  return keel::with_detail(
      keel::wrap(keel::invalid_argument_error("bad date"), "row " + std::to_string(i)),
      keel::stage_info{"parse", std::to_string(i), 1});
}

std::vector<error> rows(int n) {
  std::vector<error> xs;
  for (int i = 0; i < n; ++i)
    xs.push_back(row_error(i));
  return xs;
}

} // namespace

TEST(ErrorFormat, EmptyIsOk) {
  EXPECT_EQ(keel::to_string(error{}), "ok");
  EXPECT_EQ(keel::format(error{}, {.multiline = true}), "ok");
}

TEST(ErrorFormat, LeafShowsCodeAndMessage) {
  EXPECT_EQ(keel::to_string(keel::not_found_error("user 7")), "not_found: user 7");
  EXPECT_EQ(keel::to_string(keel::make_error(keel::code::internal, "")), "internal");
  EXPECT_EQ(keel::to_string(keel::make_error(keel_test::db_errc::locked, "table t")),
            "test.db.locked: table t");
}

TEST(ErrorFormat, WrapsJoinWithColons) {
  auto e = keel::wrap(keel::wrap(keel::unavailable_error("db down"), "load user"), "request 9");
  EXPECT_EQ(keel::to_string(e), "request 9: load user: unavailable: db down");
  std::ostringstream os;
  os << e;
  EXPECT_EQ(os.str(), keel::to_string(e));
}

TEST(ErrorFormat, JoinListsChildren) {
  auto e = keel::join(keel::not_found_error("a"), keel::unavailable_error("b"));
  EXPECT_EQ(keel::to_string(e), "2 errors: [not_found: a; unavailable: b]");
  EXPECT_EQ(keel::to_string(keel::wrap(e, "batch")),
            "batch: 2 errors: [not_found: a; unavailable: b]");
}

TEST(ErrorFormat, TruncatesLongJoinsWithCount) {
  auto e = keel::join(rows(1000));
  auto text = keel::format(e, {.max_children = 3});
  EXPECT_EQ(text, "1000 errors: [row 0: invalid_argument: bad date; row 1: invalid_argument: "
                  "bad date; row 2: invalid_argument: bad date; (997 more)]");
  EXPECT_THAT(keel::format(e, {.max_children = 0}), "1000 errors: [(1000 more)]");
  // The default keeps a million failures readable.
  EXPECT_LT(keel::to_string(e).size(), 600u);
}

TEST(ErrorFormat, NestedJoinsTruncateAtEachLevel) {
  auto inner = keel::wrap(keel::join(rows(5)), "stage parse");
  auto e = keel::join(inner, keel::internal_error("x"));
  EXPECT_EQ(keel::format(e, {.max_children = 1}),
            "2 errors: [stage parse: 5 errors: [row 0: invalid_argument: bad date; (4 more)]; "
            "(1 more)]");
}

TEST(ErrorFormat, MultilineShowsTreeAndDetails) {
  auto e = keel::wrap(keel::join(rows(4)), "import");
  auto text = keel::format(e, {.multiline = true, .max_children = 2});
  EXPECT_EQ(text, "import\n"
                  "  caused by: 4 errors\n"
                  "    - row 0\n"
                  "      · stage parse, item 0, attempt 1\n"
                  "      caused by: invalid_argument: bad date\n"
                  "    - row 1\n"
                  "      · stage parse, item 1, attempt 1\n"
                  "      caused by: invalid_argument: bad date\n"
                  "    - (2 more)");
  auto plain = keel::format(e, {.multiline = true, .max_children = 2, .details = false});
  EXPECT_THAT(plain, Not(HasSubstr("stage parse")));
}

TEST(ErrorFormat, MultilineShowsPanicStackUpToLimit) {
  auto e = keel::make_panic_error(std::make_exception_ptr(std::runtime_error("boom")));
  auto frames = keel::as<keel::panic_info>(e)->stack.size();
  ASSERT_GT(frames, 2u);
  auto text = keel::format(e, {.multiline = true, .max_stack_frames = 2});
  EXPECT_THAT(text, HasSubstr("panic: std::runtime_error: boom"));
  EXPECT_THAT(text, HasSubstr("· panic std::runtime_error: boom (stack of"));
  EXPECT_THAT(text, HasSubstr("at "));
  EXPECT_THAT(text, HasSubstr("(" + std::to_string(frames - 2) + " more frames)"));
  auto no_stack = keel::format(e, {.multiline = true, .max_stack_frames = 0});
  EXPECT_THAT(no_stack, Not(HasSubstr("more frames")));
}

TEST(ErrorFormat, UserDetailsRenderThroughTraits) {
  auto e = keel::with_detail(keel::unavailable_error("x"), keel_test::http_call{"/pay", 503});
  EXPECT_THAT(keel::format(e, {.multiline = true}), HasSubstr("· http /pay -> 503"));
  auto foreign = keel::with_detail(
      keel::unavailable_error("x"),
      keel::detail::make_foreign_detail("peer.thing", boost::json::object{{"k", 1}}));
  EXPECT_THAT(keel::format(foreign, {.multiline = true}), HasSubstr("· peer.thing {\"k\":1}"));
}
