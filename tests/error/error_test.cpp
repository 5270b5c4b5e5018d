#include "keel/error/error.hpp"

#include <stdexcept>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "keel/error.hpp"
#include "keel/testing/matchers.hpp"
#include "test_types.hpp"

using keel::code;
using keel::error;
using keel::testing::FailedWith;
using keel::testing::HasDetail;
using keel::testing::IsOk;
using keel::testing::IsOkAndHolds;
using keel_test::db_errc;
using keel_test::http_call;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// -- codes ------------------------------------------------------------------------

TEST(ErrorCode, NumbersArePinned) {
  // These values go on the wire and into journals: a change here breaks peers.
  EXPECT_EQ(static_cast<int>(code::ok), 0);
  EXPECT_EQ(static_cast<int>(code::cancelled), 1);
  EXPECT_EQ(static_cast<int>(code::unknown), 2);
  EXPECT_EQ(static_cast<int>(code::invalid_argument), 3);
  EXPECT_EQ(static_cast<int>(code::deadline_exceeded), 4);
  EXPECT_EQ(static_cast<int>(code::not_found), 5);
  EXPECT_EQ(static_cast<int>(code::already_exists), 6);
  EXPECT_EQ(static_cast<int>(code::permission_denied), 7);
  EXPECT_EQ(static_cast<int>(code::resource_exhausted), 8);
  EXPECT_EQ(static_cast<int>(code::failed_precondition), 9);
  EXPECT_EQ(static_cast<int>(code::aborted), 10);
  EXPECT_EQ(static_cast<int>(code::out_of_range), 11);
  EXPECT_EQ(static_cast<int>(code::unimplemented), 12);
  EXPECT_EQ(static_cast<int>(code::internal), 13);
  EXPECT_EQ(static_cast<int>(code::unavailable), 14);
  EXPECT_EQ(static_cast<int>(code::data_loss), 15);
  EXPECT_EQ(static_cast<int>(code::unauthenticated), 16);
  EXPECT_EQ(static_cast<int>(code::panic), 17);
}

TEST(ErrorCode, NamesRoundTrip) {
  for (int v = 0; v <= keel::max_canonical_code; ++v) {
    auto c = static_cast<code>(v);
    EXPECT_EQ(keel::code_from_string(keel::to_string(c)), c) << v;
    EXPECT_EQ(keel::code_from_value(static_cast<uint8_t>(v)), c);
  }
  EXPECT_EQ(keel::to_string(code::unavailable), "unavailable");
  EXPECT_EQ(keel::code_from_string("no_such_code"), std::nullopt);
  EXPECT_EQ(keel::code_from_value(18), std::nullopt);
  EXPECT_EQ(keel::to_string(static_cast<code>(200)), "unknown");
}

TEST(ErrorCode, RetryAdvice) {
  using keel::retry_advice;
  EXPECT_EQ(keel::retry_advice_of(code::unavailable), retry_advice::retry_call);
  EXPECT_EQ(keel::retry_advice_of(code::resource_exhausted), retry_advice::retry_call);
  EXPECT_EQ(keel::retry_advice_of(code::deadline_exceeded), retry_advice::retry_call);
  EXPECT_EQ(keel::retry_advice_of(code::aborted), retry_advice::retry_higher_level);
  EXPECT_EQ(keel::retry_advice_of(code::failed_precondition), retry_advice::retry_after_fix);
  for (auto c : {code::cancelled, code::invalid_argument, code::not_found, code::internal,
                 code::panic, code::permission_denied, code::data_loss})
    EXPECT_EQ(keel::retry_advice_of(c), retry_advice::do_not_retry) << keel::to_string(c);
  EXPECT_EQ(keel::to_string(retry_advice::retry_higher_level), "retry_higher_level");
}

TEST(ErrorCode, ConvertsToStdErrorCode) {
  std::error_code ec = code::unavailable;
  EXPECT_EQ(ec.value(), 14);
  EXPECT_STREQ(ec.category().name(), "keel");
  EXPECT_EQ(ec.message(), "unavailable");
}

// -- construction -------------------------------------------------------------------

TEST(ErrorConstruction, DefaultIsEmpty) {
  error e;
  EXPECT_FALSE(e);
  EXPECT_TRUE(e.empty());
  EXPECT_EQ(e.code(), code::ok);
  EXPECT_EQ(e.category(), "");
  EXPECT_EQ(e.message(), "");
  EXPECT_FALSE(e.cause());
  EXPECT_TRUE(e.children().empty());
  EXPECT_TRUE(e.details().empty());
  EXPECT_THAT(e, IsOk());
}

TEST(ErrorConstruction, MakeErrorSetsCodeAndMessage) {
  auto e = keel::make_error(code::not_found, "user 7");
  ASSERT_TRUE(e);
  EXPECT_EQ(e.code(), code::not_found);
  EXPECT_EQ(e.category(), "keel");
  EXPECT_EQ(e.value(), 5);
  EXPECT_EQ(e.code_name(), "not_found");
  EXPECT_EQ(e.message(), "user 7");
  EXPECT_THAT(e, FailedWith(code::not_found));
}

TEST(ErrorConstruction, OkCodeGivesEmptyError) {
  EXPECT_FALSE(keel::make_error(code::ok, "nothing"));
}

TEST(ErrorConstruction, FactoriesAndPredicatesCoverEveryCode) {
  EXPECT_EQ(keel::cancelled_error("x").code(), code::cancelled);
  EXPECT_EQ(keel::deadline_exceeded_error("x").code(), code::deadline_exceeded);
  EXPECT_EQ(keel::panic_error("x").code(), code::panic);
  EXPECT_EQ(keel::unauthenticated_error("x").code(), code::unauthenticated);
  EXPECT_TRUE(keel::is_unavailable(keel::wrap(keel::unavailable_error("db"), "load")));
  EXPECT_FALSE(keel::is_unavailable(keel::internal_error("bug")));
  EXPECT_FALSE(keel::is_internal(error{}));
}

TEST(ErrorConstruction, ApplicationCategory) {
  auto e = keel::make_error(db_errc::connection_lost, "socket closed");
  EXPECT_EQ(e.category(), "test.db");
  EXPECT_EQ(e.value(), 1);
  EXPECT_EQ(e.code_name(), "connection_lost");
  EXPECT_EQ(e.code(), code::unavailable); // the canonical code carries retry meaning
  EXPECT_TRUE(keel::is(e, db_errc::connection_lost));
  EXPECT_FALSE(keel::is(e, db_errc::locked));
  EXPECT_TRUE(keel::is(e, code::unavailable));
  EXPECT_EQ(keel::as<db_errc>(e), db_errc::connection_lost);
  EXPECT_EQ(keel::as<db_errc>(keel::internal_error("x")), std::nullopt);
  EXPECT_EQ(&keel::category_of<db_errc>(), &keel::category_of<db_errc>());
}

TEST(ErrorConstruction, ForeignCategoryKeepsEverything) {
  auto e = keel::error_builder{"peer.payments", 42, "card_declined", code::failed_precondition}
               .message("card 4242 declined")
               .build();
  EXPECT_EQ(e.category(), "peer.payments");
  EXPECT_EQ(e.value(), 42);
  EXPECT_EQ(e.code_name(), "card_declined");
  EXPECT_EQ(e.code(), code::failed_precondition);
}

TEST(ErrorConstruction, CopiesShareNodes) {
  auto e = keel::internal_error("x");
  auto copy = e;
  EXPECT_TRUE(copy.same_node(e));
  EXPECT_EQ(copy, e);
}

// -- wrap -------------------------------------------------------------------------

TEST(ErrorWrap, AddsContextAndKeepsCode) {
  auto leaf = keel::invalid_argument_error("bad date");
  auto e = keel::wrap(keel::wrap(leaf, "row 7"), "stage parse");
  EXPECT_EQ(e.code(), code::invalid_argument);
  EXPECT_EQ(e.message(), "stage parse");
  EXPECT_EQ(e.cause().message(), "row 7");
  EXPECT_TRUE(e.cause().cause().same_node(leaf));
  EXPECT_EQ(keel::to_string(e), "stage parse: row 7: invalid_argument: bad date");
}

TEST(ErrorWrap, WrappingEmptyGivesEmpty) {
  EXPECT_FALSE(keel::wrap(error{}, "context"));
  EXPECT_FALSE(keel::wrap(error{}, code::unavailable, "context"));
  EXPECT_FALSE(keel::wrap(error{}, db_errc::locked, "context"));
}

TEST(ErrorWrap, ReclassifiesAtABoundary) {
  auto busy = keel::make_error(db_errc::locked, "database is locked");
  auto e = keel::wrap(busy, code::unavailable, "store");
  EXPECT_EQ(e.code(), code::unavailable);
  EXPECT_TRUE(keel::is(e, db_errc::locked)); // the cause is still there
  EXPECT_TRUE(keel::is(e, code::aborted));   // and its canonical code too
  auto app = keel::wrap(keel::unavailable_error("tcp reset"), db_errc::connection_lost, "query");
  EXPECT_EQ(app.category(), "test.db");
  EXPECT_EQ(keel::as<db_errc>(app), db_errc::connection_lost);
  EXPECT_EQ(keel::wrap(busy, code::ok, "keep").code(), code::aborted);
}

TEST(ErrorWrap, WrapOfApplicationCodeKeepsCategory) {
  auto e = keel::wrap(keel::make_error(db_errc::constraint_violation, "dup key"), "insert");
  EXPECT_EQ(e.category(), "test.db");
  EXPECT_EQ(e.code_name(), "constraint_violation");
  EXPECT_EQ(e.code(), code::failed_precondition);
}

// -- join -------------------------------------------------------------------------

TEST(ErrorJoin, NothingOrOnlyEmptyGivesEmpty) {
  EXPECT_FALSE(keel::join(std::vector<error>{}));
  EXPECT_FALSE(keel::join(error{}, error{}, error{}));
}

TEST(ErrorJoin, DropsEmptyErrors) {
  auto a = keel::not_found_error("a");
  auto b = keel::unavailable_error("b");
  auto e = keel::join(error{}, a, error{}, b);
  ASSERT_TRUE(e.is_join());
  ASSERT_EQ(e.children().size(), 2u);
  EXPECT_TRUE(e.children()[0].same_node(a));
  EXPECT_TRUE(e.children()[1].same_node(b));
}

TEST(ErrorJoin, SingleErrorIsReturnedAsIs) {
  auto a = keel::not_found_error("a");
  auto e = keel::join(error{}, a);
  EXPECT_TRUE(e.same_node(a));
  EXPECT_FALSE(e.is_join());
}

TEST(ErrorJoin, FlattensNestedJoins) {
  auto a = keel::not_found_error("a");
  auto b = keel::unavailable_error("b");
  auto c = keel::internal_error("c");
  auto d = keel::cancelled_error("d");
  auto e = keel::join(keel::join(a, b), keel::join(c, keel::join(d)));
  ASSERT_EQ(e.children().size(), 4u);
  EXPECT_TRUE(e.children()[3].same_node(d));
  EXPECT_EQ(e.code(), code::not_found); // the first child's
}

TEST(ErrorJoin, KeepsWrappedOrDetailedJoinsAsUnits) {
  auto inner = keel::join(keel::not_found_error("a"), keel::unavailable_error("b"));
  auto wrapped = keel::wrap(inner, "stage store");
  auto detailed = keel::with_detail(inner, keel::stage_info{"parse", "", 0});
  auto e = keel::join(wrapped, detailed, keel::internal_error("c"));
  ASSERT_EQ(e.children().size(), 3u);
  EXPECT_EQ(e.children()[0].message(), "stage store");
  EXPECT_TRUE(e.children()[1].is_join());
}

TEST(ErrorJoin, WideJoin) {
  std::vector<error> errs;
  for (int i = 0; i < 10000; ++i)
    errs.push_back(keel::unavailable_error("item " + std::to_string(i)));
  errs.push_back(keel::not_found_error("needle"));
  auto e = keel::join(std::move(errs));
  EXPECT_EQ(e.children().size(), 10001u);
  EXPECT_TRUE(keel::is(e, code::not_found));
  EXPECT_EQ(keel::leaves(e).size(), 10001u);
  EXPECT_EQ(keel::node_count(e), 10002u);
}

// -- is / as / visit ----------------------------------------------------------------

TEST(ErrorIs, WalksCausesAndChildrenDepthFirst) {
  auto deep = keel::not_found_error("needle");
  for (int i = 0; i < 50; ++i)
    deep = keel::wrap(deep, "level " + std::to_string(i));
  auto e = keel::join(keel::unavailable_error("x"),
                      keel::wrap(keel::join(keel::internal_error("y"), deep), "outer"));
  EXPECT_TRUE(keel::is(e, code::not_found));
  EXPECT_TRUE(keel::is(e, code::internal));
  EXPECT_TRUE(keel::is(e, code::unavailable));
  EXPECT_FALSE(keel::is(e, code::permission_denied));
  EXPECT_FALSE(keel::is(e, code::ok));
  EXPECT_TRUE(keel::is(error{}, code::ok));
  EXPECT_FALSE(keel::is(error{}, code::internal));
}

TEST(ErrorIs, MatchesSentinelsByIdentityAndByValue) {
  const auto sentinel = keel::not_found_error("no such user");
  auto e = keel::join(keel::unavailable_error("x"), keel::wrap(sentinel, "load profile"));
  EXPECT_TRUE(keel::is(e, sentinel));
  // A look-alike (same category, value, message) matches too: that is what
  // survives a trip through JSON or the wire.
  EXPECT_TRUE(keel::is(e, keel::not_found_error("no such user")));
  EXPECT_FALSE(keel::is(e, keel::not_found_error("no such order")));
  EXPECT_FALSE(keel::is(e, keel::make_error(db_errc::locked, "no such user")));
  EXPECT_FALSE(keel::is(e, error{}));
  EXPECT_TRUE(keel::is(error{}, error{}));
}

TEST(ErrorAs, FindsFirstDetailDepthFirst) {
  auto first =
      keel::with_detail(keel::invalid_argument_error("a"), keel::stage_info{"parse", "1", 1});
  auto second =
      keel::with_detail(keel::invalid_argument_error("b"), keel::stage_info{"store", "2", 3});
  auto e = keel::wrap(keel::join(first, second), "import");
  auto info = keel::as<keel::stage_info>(e);
  ASSERT_TRUE(info);
  EXPECT_EQ(info->stage, "parse");
  EXPECT_EQ(info->item_id, "1");
  EXPECT_EQ(keel::as<keel::panic_info>(e), std::nullopt);
  EXPECT_EQ(keel::as<keel::stage_info>(error{}), std::nullopt);
  EXPECT_THAT(e, HasDetail<keel::stage_info>(::testing::Field(&keel::stage_info::stage, "parse")));
}

TEST(ErrorAs, UserDefinedDetail) {
  auto e = keel::wrap(
      keel::with_detail(keel::unavailable_error("upstream"), http_call{"/pay", 503}), "charge");
  auto call = keel::as<http_call>(e);
  ASSERT_TRUE(call);
  EXPECT_EQ(call->url, "/pay");
  EXPECT_EQ(call->status, 503);
}

TEST(ErrorAs, DecodesDetailsFromPeersOnDemand) {
  // A detail type this process knows only by its traits arrives as JSON.
  auto d = keel::detail::make_foreign_detail("test.http_call", {{"url", "/x"}, {"status", 500}});
  auto e = keel::with_detail(keel::internal_error("peer"), d);
  EXPECT_EQ(keel::as<http_call>(e), (http_call{"/x", 500}));
  // JSON that does not decode is skipped rather than misread.
  auto bad = keel::with_detail(keel::internal_error("peer"),
                               keel::detail::make_foreign_detail("test.http_call", {{"url", 3}}));
  EXPECT_EQ(keel::as<http_call>(bad), std::nullopt);
}

TEST(ErrorWithDetail, AddsToTopNodeOnly) {
  auto base = keel::unavailable_error("x");
  auto e = keel::with_detail(base, keel::public_message{"try later"});
  EXPECT_EQ(e.details().size(), 1u);
  EXPECT_TRUE(base.details().empty()); // errors are immutable
  EXPECT_FALSE(keel::with_detail(error{}, keel::public_message{"x"}));
  auto twice = keel::with_detail(e, keel::stage_info{"s", "", 0});
  EXPECT_EQ(twice.details().size(), 2u);
  EXPECT_NE(twice, e);
}

TEST(ErrorVisit, DispatchesEachNodeToFirstMatchingHandler) {
  auto e = keel::join(
      keel::with_detail(keel::invalid_argument_error("a"), keel::stage_info{"parse", "1", 1}),
      keel::with_detail(keel::unavailable_error("b"), http_call{"/x", 503}),
      keel::internal_error("c"));
  std::vector<std::string> seen;
  auto handled = keel::visit(
      e, [&](const keel::stage_info& s) { seen.push_back("stage:" + s.stage); },
      [&](const http_call& c) { seen.push_back("http:" + c.url); },
      [&](const error& n) { seen.push_back("node:" + std::string{n.code_name()}); });
  EXPECT_EQ(handled, 4u);
  EXPECT_THAT(seen,
              ElementsAre("node:invalid_argument", "stage:parse", "http:/x", "node:internal"));
}

TEST(ErrorVisit, SkipsNodesNoHandlerAccepts) {
  auto e = keel::wrap(keel::internal_error("c"), "outer");
  int stages = 0;
  EXPECT_EQ(keel::visit(e, [&](const keel::stage_info&) { ++stages; }), 0u);
  EXPECT_EQ(stages, 0);
  EXPECT_EQ(keel::visit(error{}, [](const error&) {}), 0u);
}

TEST(ErrorWalk, StopsEarly) {
  auto e = keel::join(keel::not_found_error("a"), keel::internal_error("b"),
                      keel::unavailable_error("c"));
  int visited = 0;
  EXPECT_FALSE(keel::walk(e, [&](const error& n) {
    ++visited;
    return n.code() != code::internal;
  }));
  EXPECT_EQ(visited, 3); // join, a, b
}

// -- structure ----------------------------------------------------------------------

TEST(ErrorStructure, VeryDeepChainsAreSafe) {
  // Walks, comparisons, formatting and destruction are iterative: a chain far
  // deeper than any stack would allow must work.
  auto make = [] {
    auto e = keel::not_found_error("bottom");
    for (int i = 0; i < 200000; ++i)
      e = keel::wrap(std::move(e), "w");
    return e;
  };
  auto e = make();
  auto f = make();
  EXPECT_TRUE(keel::is(e, code::not_found));
  EXPECT_EQ(keel::node_count(e), 200001u);
  EXPECT_EQ(e, f);
  EXPECT_EQ(keel::format(e).size(), 200000u * 3 + std::string{"not_found: bottom"}.size());
  EXPECT_EQ(keel::leaves(e).size(), 1u);
}

TEST(ErrorStructure, SharedSubtreesSurviveTheirParents) {
  auto shared = keel::not_found_error("shared");
  {
    auto a = keel::wrap(keel::wrap(shared, "a1"), "a2");
    auto b = keel::join(a, keel::wrap(shared, "b"));
  }
  EXPECT_EQ(shared.message(), "shared");
  auto chain = keel::wrap(keel::wrap(shared, "x"), "y");
  auto middle = chain.cause();
  chain = error{};
  EXPECT_EQ(middle.message(), "x");
  EXPECT_TRUE(middle.cause().same_node(shared));
}

TEST(ErrorStructure, EqualityIsStructural) {
  auto make = [](std::string leaf) {
    return keel::wrap(
        keel::join(keel::not_found_error(std::move(leaf)),
                   keel::with_detail(keel::unavailable_error("b"), keel::stage_info{"s", "1", 2})),
        "top");
  };
  EXPECT_EQ(make("a"), make("a"));
  EXPECT_NE(make("a"), make("z"));
  EXPECT_NE(make("a"), error{});
  EXPECT_EQ(error{}, error{});
  EXPECT_NE(keel::not_found_error("x"), keel::make_error(db_errc::locked, "x"));
}

// -- expected -----------------------------------------------------------------------

keel::expected<int> parse_int(std::string_view s) {
  if (s.empty())
    return keel::invalid_argument_error("empty");
  return std::stoi(std::string{s});
}

TEST(Expected, HoldsValueOrError) {
  EXPECT_THAT(parse_int("42"), IsOkAndHolds(42));
  auto bad = parse_int("");
  EXPECT_FALSE(bad);
  EXPECT_THAT(bad, FailedWith(code::invalid_argument));
  EXPECT_EQ(bad.value_or(7), 7);
  EXPECT_THROW((void)bad.value(), keel::bad_expected_access);
  try {
    (void)bad.value();
  } catch (const keel::bad_expected_access& x) {
    EXPECT_EQ(x.error().code(), code::invalid_argument);
    EXPECT_THAT(x.what(), HasSubstr("empty"));
  }
}

TEST(Expected, EmptyErrorBecomesInternal) {
  keel::expected<int> x{error{}};
  EXPECT_FALSE(x);
  EXPECT_THAT(x, FailedWith(code::internal, HasSubstr("empty error")));
  keel::expected<void> v{error{}};
  EXPECT_FALSE(v);
}

TEST(Expected, MonadicOperations) {
  auto doubled = parse_int("21").transform([](int x) { return x * 2; });
  EXPECT_THAT(doubled, IsOkAndHolds(42));
  auto chained = parse_int("").and_then([](int x) { return keel::expected<int>(x + 1); });
  EXPECT_THAT(chained, FailedWith(code::invalid_argument));
  auto recovered = parse_int("").or_else([](const error&) { return keel::expected<int>(0); });
  EXPECT_THAT(recovered, IsOkAndHolds(0));
  auto str = parse_int("5").transform([](int x) { return std::to_string(x); });
  EXPECT_THAT(str, IsOkAndHolds("5"));
}

TEST(Expected, Void) {
  keel::expected<void> ok;
  EXPECT_THAT(ok, IsOk());
  EXPECT_NO_THROW(ok.value());
  keel::expected<void> bad = keel::unavailable_error("x");
  EXPECT_THAT(bad, FailedWith(code::unavailable));
  EXPECT_THROW(bad.value(), keel::bad_expected_access);
}

TEST(Expected, MoveOnlyValues) {
  keel::expected<std::unique_ptr<int>> p = std::make_unique<int>(3);
  ASSERT_TRUE(p);
  auto owned = std::move(p).value();
  EXPECT_EQ(*owned, 3);
}

// -- panics -------------------------------------------------------------------------

struct not_a_std_exception {
  int value;
};

TEST(Panic, StdExceptionBecomesPanicError) {
  auto e = keel::make_panic_error(std::make_exception_ptr(std::out_of_range("index 9")));
  EXPECT_EQ(e.code(), code::panic);
  EXPECT_EQ(e.message(), "std::out_of_range: index 9");
  auto info = keel::as<keel::panic_info>(e);
  ASSERT_TRUE(info);
  EXPECT_EQ(info->exception_type, "std::out_of_range");
  EXPECT_EQ(info->what, "index 9");
  EXPECT_EQ(info->site, keel::capture_site::catch_site);
  EXPECT_FALSE(info->stack.empty());
}

TEST(Panic, NonStdExceptionsBecomePanicErrors) {
  auto e1 = keel::make_panic_error(std::make_exception_ptr(not_a_std_exception{3}));
  EXPECT_EQ(e1.code(), code::panic);
  EXPECT_EQ(keel::as<keel::panic_info>(e1)->exception_type, "not_a_std_exception");
  auto e2 = keel::make_panic_error(std::make_exception_ptr(42));
  EXPECT_EQ(keel::as<keel::panic_info>(e2)->exception_type, "int");
  auto e3 = keel::make_panic_error(std::make_exception_ptr(static_cast<const char*>("boom")));
  EXPECT_EQ(keel::as<keel::panic_info>(e3)->what, "boom");
  auto e4 = keel::make_panic_error(std::make_exception_ptr(std::string{"bang"}));
  EXPECT_EQ(e4.message(), "std::string: bang");
  EXPECT_FALSE(keel::make_panic_error(nullptr));
}

[[gnu::noinline]] void thrower_function_for_trace() {
  keel::throw_with_trace(std::logic_error("invariant broken"));
}

TEST(Panic, ThrowWithTraceRecordsTheThrowSite) {
  keel::error e;
  try {
    thrower_function_for_trace();
  } catch (...) {
    e = keel::make_panic_error(std::current_exception());
  }
  auto info = keel::as<keel::panic_info>(e);
  ASSERT_TRUE(info);
  EXPECT_EQ(info->exception_type, "std::logic_error");
  EXPECT_EQ(info->what, "invariant broken");
  EXPECT_EQ(info->site, keel::capture_site::throw_site);
  auto lines = info->stack.lines();
  ASSERT_FALSE(lines.empty());
  bool found = false;
  for (auto& l : lines)
    found = found || l.find("thrower_function_for_trace") != std::string::npos;
  EXPECT_TRUE(found) << ::testing::PrintToString(lines);
}

TEST(Panic, InvokeGuarded) {
  auto ok = keel::invoke_guarded([] { return 5; });
  EXPECT_THAT(ok, IsOkAndHolds(5));
  auto thrown = keel::invoke_guarded([]() -> int { throw std::runtime_error("kaput"); });
  EXPECT_THAT(thrown, FailedWith(code::panic, HasSubstr("kaput")));
  auto void_ok = keel::invoke_guarded([] {});
  EXPECT_THAT(void_ok, IsOk());
  auto void_thrown = keel::invoke_guarded([] { throw 1; });
  EXPECT_THAT(void_thrown, FailedWith(code::panic));
  error passed = keel::invoke_guarded([] { return keel::not_found_error("x"); });
  EXPECT_THAT(passed, FailedWith(code::not_found));
  auto exp = keel::invoke_guarded([] { return parse_int(""); });
  EXPECT_THAT(exp, FailedWith(code::invalid_argument));
}
