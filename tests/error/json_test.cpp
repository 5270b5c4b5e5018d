#include "keel/error/json.hpp"

#include <stdexcept>
#include <string>
#include <vector>

#include <boost/json.hpp>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "keel/error.hpp"
#include "keel/testing/matchers.hpp"
#include "test_types.hpp"

using keel::code;
using keel::error;
using keel::testing::FailedWith;
using keel::testing::IsOkAndHolds;
using ::testing::HasSubstr;

namespace {

error rich_error() {
  auto panic = keel::make_panic_error(std::make_exception_ptr(std::runtime_error("boom")));
  auto foreign =
      keel::error_builder{"peer.payments", 42, "card_declined", code::failed_precondition}
          .message("declined")
          .detail(
              keel::detail::make_foreign_detail("peer.receipt", boost::json::object{{"id", "r-1"}}))
          .build();
  auto app = keel::with_detail(keel::make_error(keel_test::db_errc::locked, "table orders"),
                               keel_test::http_call{"/db", 423});
  auto join =
      keel::join(keel::with_detail(keel::wrap(keel::invalid_argument_error("bad date"), "row 3"),
                                   keel::stage_info{"parse", "3", 2}),
                 keel::wrap(panic, "stage price"), foreign, app);
  return keel::with_detail(keel::wrap(join, code::aborted, "import"),
                           keel::public_message{"import failed"});
}

std::string read_failure(std::string_view text) {
  auto r = keel::error_from_json_string(text);
  if (r)
    return "parsed";
  return std::string{r.error().message()};
}

} // namespace

TEST(ErrorJson, EmptyIsNull) {
  EXPECT_TRUE(keel::to_json(error{}).is_null());
  EXPECT_EQ(keel::to_json_string(error{}), "null");
  EXPECT_THAT(keel::error_from_json_string("null"), IsOkAndHolds(error{}));
}

TEST(ErrorJson, LeafShape) {
  auto v = keel::to_json(keel::not_found_error("user 7"));
  EXPECT_EQ(v, boost::json::parse(R"({"category":"keel","code":"not_found","value":5,
                                      "canonical":5,"message":"user 7"})"));
}

TEST(ErrorJson, RoundTripIsLossless) {
  auto e = rich_error();
  auto back = keel::error_from_json_string(keel::to_json_string(e));
  ASSERT_TRUE(back) << back.error();
  EXPECT_EQ(*back, e);
  EXPECT_EQ(keel::to_string(*back), keel::to_string(e));
  // Built-in and user details decode on the way back.
  EXPECT_EQ(keel::as<keel::stage_info>(*back), (keel::stage_info{"parse", "3", 2}));
  EXPECT_EQ(keel::as<keel_test::http_call>(*back), (keel_test::http_call{"/db", 423}));
  EXPECT_EQ(keel::as<keel::panic_info>(*back)->what, "boom");
  EXPECT_TRUE(keel::is(*back, keel_test::db_errc::locked));
  EXPECT_EQ(keel::as<keel::panic_info>(*back)->stack, keel::as<keel::panic_info>(e)->stack);
}

TEST(ErrorJson, UnknownCategoryKeepsCodeAndMessage) {
  auto text = R"({"category":"peer.billing","code":"over_limit","value":7,"canonical":8,
                  "message":"limit 100 reached"})";
  auto e = keel::error_from_json_string(text);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->category(), "peer.billing");
  EXPECT_EQ(e->value(), 7);
  EXPECT_EQ(e->code_name(), "over_limit");
  EXPECT_EQ(e->code(), code::resource_exhausted);
  EXPECT_EQ(e->message(), "limit 100 reached");
  EXPECT_EQ(keel::to_string(*e), "peer.billing.over_limit: limit 100 reached");
  // And it goes out again as it came in.
  EXPECT_EQ(keel::to_json(*e), boost::json::parse(text));
}

TEST(ErrorJson, UnknownDetailTypeIsKept) {
  auto text = R"({"category":"keel","value":14,"message":"x",
                  "details":[{"type":"peer.trace","data":{"span":"ab12","n":[1,2]}}]})";
  auto e = keel::error_from_json_string(text);
  ASSERT_TRUE(e);
  ASSERT_EQ(e->details().size(), 1u);
  EXPECT_EQ(e->details()[0]->type_name(), "peer.trace");
  EXPECT_EQ(keel::to_json(*e).at("details").at(0).at("data"),
            boost::json::parse(R"({"span":"ab12","n":[1,2]})"));
}

TEST(ErrorJson, CanonicalDefaultsForKeelCategory) {
  auto e = keel::error_from_json_string(R"({"category":"keel","value":14})");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code(), code::unavailable);
  EXPECT_EQ(e->message(), "");
}

TEST(ErrorJson, WideAndDeepTrees) {
  std::vector<error> many;
  for (int i = 0; i < 1000; ++i)
    many.push_back(keel::unavailable_error(std::to_string(i)));
  auto wide = keel::join(std::move(many));
  EXPECT_THAT(keel::error_from_json_string(keel::to_json_string(wide)), IsOkAndHolds(wide));
  auto deep = keel::not_found_error("bottom");
  for (int i = 0; i < 3000; ++i)
    deep = keel::wrap(deep, "w" + std::to_string(i));
  EXPECT_THAT(keel::error_from_json_string(keel::to_json_string(deep)), IsOkAndHolds(deep));
}

TEST(ErrorJson, RejectsTooDeepInput) {
  auto deep = keel::not_found_error("bottom");
  for (int i = 0; i < 20; ++i)
    deep = keel::wrap(deep, "w");
  auto r = keel::error_from_json_string(keel::to_json_string(deep), {.max_depth = 10});
  EXPECT_THAT(r, FailedWith(code::invalid_argument));
  EXPECT_FALSE(r);
}

TEST(ErrorJson, WrongTypesAndMissingFieldsNameThePath) {
  EXPECT_EQ(read_failure("{"), "error JSON does not parse at offset 1: incomplete JSON");
  EXPECT_EQ(read_failure(R"({"category": kel})"),
            "error JSON does not parse at offset 13: syntax error");
  EXPECT_EQ(read_failure("null x"), "error JSON does not parse at offset 5: extra data");
  EXPECT_EQ(read_failure("[]"), "error: expected an object, got an array");
  EXPECT_EQ(read_failure(R"({"value":3})"), "error: missing field 'category'");
  EXPECT_EQ(read_failure(R"({"category":7,"value":3})"),
            "error.category: expected a string, got an integer");
  EXPECT_EQ(read_failure(R"({"category":"","value":3})"), "error.category: must not be empty");
  EXPECT_EQ(read_failure(R"({"category":"keel"})"), "error: missing field 'value'");
  EXPECT_EQ(read_failure(R"({"category":"keel","value":"3"})"),
            "error.value: expected an integer in 0..255, got a string");
  EXPECT_EQ(read_failure(R"({"category":"keel","value":300})"),
            "error.value: expected an integer in 0..255, got 300");
  EXPECT_EQ(read_failure(R"({"category":"keel","value":-1})"),
            "error.value: expected an integer in 0..255, got -1");
  EXPECT_EQ(read_failure(R"({"category":"keel","value":99})"),
            "error.value: 99 is not a canonical code matching 'canonical'");
  EXPECT_EQ(read_failure(R"({"category":"keel","value":3,"code":"not_found"})"),
            "error.code: 'not_found' does not match value 3");
  EXPECT_EQ(read_failure(R"({"category":"app","value":3})"), "error: missing field 'canonical'");
  EXPECT_EQ(read_failure(R"({"category":"app","value":3,"canonical":0})"),
            "error.canonical: expected an integer in 1..17, got 0");
  EXPECT_EQ(read_failure(R"({"category":"keel","value":3,"message":false})"),
            "error.message: expected a string, got a boolean");
  EXPECT_EQ(read_failure(R"({"category":"keel","value":3,"cause":5})"),
            "error.cause: expected an object, got an integer");
  EXPECT_EQ(read_failure(R"({"category":"keel","value":3,"errors":{}})"),
            "error.errors: expected an array, got an object");
  EXPECT_EQ(
      read_failure(R"({"category":"keel","value":3,"errors":[{"category":"keel","value":3}]})"),
      "error.errors: a join holds at least 2 errors, got 1");
  EXPECT_EQ(read_failure(R"({"category":"keel","value":3,"errors":[
              {"category":"keel","value":3},
              {"category":"keel","value":3,"cause":{"category":"keel","value":"x"}}]})"),
            "error.errors[1].cause.value: expected an integer in 0..255, got a string");
  EXPECT_EQ(read_failure(R"({"category":"keel","value":3,"details":[{"data":{}}]})"),
            "error.details[0]: missing field 'type'");
  EXPECT_EQ(read_failure(R"({"category":"keel","value":3,"details":[{"type":"x"}]})"),
            "error.details[0]: missing field 'data'");
  EXPECT_EQ(read_failure(R"({"category":"keel","value":3,"details":7})"),
            "error.details: expected an array, got an integer");
}

TEST(ErrorJson, BrokenBuiltinDetailIsKeptAsJson) {
  // A peer with a newer keel may send a built-in detail this version reads
  // differently: keep it rather than lose it.
  auto e = keel::error_from_json_string(
      R"({"category":"keel","value":3,"details":[{"type":"keel.stage","data":{"stage":1}}]})");
  ASSERT_TRUE(e);
  EXPECT_EQ(keel::as<keel::stage_info>(*e), std::nullopt);
  EXPECT_EQ(e->details()[0]->type_name(), "keel.stage");
  EXPECT_EQ(e->details()[0]->to_json(), boost::json::parse(R"({"stage":1})"));
}

TEST(ErrorJson, BuiltinDetailDecodersReportProblems) {
  using keel::detail_traits;
  EXPECT_THAT(detail_traits<keel::stage_info>::from_json(boost::json::parse("[]")),
              FailedWith(code::invalid_argument, HasSubstr("keel.stage: expected an object")));
  EXPECT_THAT(detail_traits<keel::panic_info>::from_json(
                  boost::json::parse(R"({"type":"x","site":"moon"})")),
              FailedWith(code::invalid_argument, HasSubstr("unknown capture site 'moon'")));
  EXPECT_THAT(
      detail_traits<keel::panic_info>::from_json(boost::json::parse(R"({"type":"x","stack":[1]})")),
      FailedWith(code::invalid_argument, HasSubstr("keel.panic.stack[0]")));
  EXPECT_THAT(detail_traits<keel::public_message>::from_json(boost::json::parse("{}")),
              FailedWith(code::invalid_argument, HasSubstr("missing field 'text'")));
  EXPECT_THAT(detail_traits<keel::std_error_info>::from_json(
                  boost::json::parse(R"({"category":"generic"})")),
              FailedWith(code::invalid_argument, HasSubstr("missing field 'value'")));
}
