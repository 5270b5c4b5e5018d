#include "keel/error/status.hpp"

#include <cerrno>
#include <future>
#include <string>
#include <system_error>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "keel/testing/matchers.hpp"

namespace {

using keel::code;
using ::testing::HasSubstr;
using ::testing::Not;

// -- HTTP and gRPC status -------------------------------------------------------

struct status_row {
  code c;
  int http;
  int grpc;
  bool client;
};

// Every code once; the gRPC column is the gRPC spec's numbering.
const std::vector<status_row> status_table = {
    {code::ok, 200, 0, false},
    {code::cancelled, 499, 1, true},
    {code::unknown, 500, 2, false},
    {code::invalid_argument, 400, 3, true},
    {code::deadline_exceeded, 504, 4, false},
    {code::not_found, 404, 5, true},
    {code::already_exists, 409, 6, true},
    {code::permission_denied, 403, 7, true},
    {code::resource_exhausted, 429, 8, false},
    {code::failed_precondition, 400, 9, true},
    {code::aborted, 409, 10, true},
    {code::out_of_range, 400, 11, true},
    {code::unimplemented, 501, 12, false},
    {code::internal, 500, 13, false},
    {code::unavailable, 503, 14, false},
    {code::data_loss, 500, 15, false},
    {code::unauthenticated, 401, 16, true},
    {code::panic, 500, 13, false},
};

TEST(ErrorStatus, TableCoversEveryCode) {
  ASSERT_EQ(status_table.size(), std::size_t{keel::max_canonical_code} + 1);
  for (std::size_t i = 0; i < status_table.size(); ++i)
    EXPECT_EQ(static_cast<std::size_t>(status_table[i].c), i);
}

TEST(ErrorStatus, HttpStatusOfEveryCode) {
  for (const auto& row : status_table)
    EXPECT_EQ(keel::http_status(row.c), row.http) << keel::to_string(row.c);
}

TEST(ErrorStatus, GrpcStatusOfEveryCode) {
  for (const auto& row : status_table)
    EXPECT_EQ(keel::grpc_status(row.c), row.grpc) << keel::to_string(row.c);
}

TEST(ErrorStatus, ClientErrors) {
  for (const auto& row : status_table)
    EXPECT_EQ(keel::is_client_error(row.c), row.client) << keel::to_string(row.c);
}

TEST(ErrorStatus, PublicStatusCarriesStatusesAndCodeName) {
  for (const auto& row : status_table) {
    if (row.c == code::ok)
      continue;
    auto st = keel::to_public_status(keel::make_error(row.c, "m"));
    EXPECT_EQ(st.http_status, row.http);
    EXPECT_EQ(st.grpc_status, row.grpc);
    // Which exception escaped is for the logs: outside, a panic is internal.
    EXPECT_EQ(st.code, keel::to_string(row.c == code::panic ? code::internal : row.c));
    EXPECT_FALSE(st.message.empty()) << st.code;
  }
}

TEST(ErrorStatus, EmptyErrorIsOk) {
  auto st = keel::to_public_status(keel::error{});
  EXPECT_EQ(st.http_status, 200);
  EXPECT_EQ(st.grpc_status, 0);
  EXPECT_EQ(st.code, "ok");
  EXPECT_EQ(st.message, "");
}

// -- public messages ------------------------------------------------------------

TEST(ErrorPublicStatus, ClientErrorShowsOnlyTopMessage) {
  auto leaf = keel::internal_error("query failed: password=hunter2");
  auto err = keel::wrap(leaf, code::invalid_argument, "bad field");
  auto st = keel::to_public_status(err);
  EXPECT_EQ(st.http_status, 400);
  EXPECT_EQ(st.code, "invalid_argument");
  EXPECT_EQ(st.message, "bad field");
  EXPECT_THAT(st.message, Not(HasSubstr("hunter2")));
  EXPECT_THAT(st.message, Not(HasSubstr("query")));
}

TEST(ErrorPublicStatus, ClientErrorWithoutMessageShowsCodeName) {
  auto err = keel::join(keel::not_found_error("user 7: secret"), keel::not_found_error("user 8"));
  ASSERT_TRUE(err.is_join());
  auto st = keel::to_public_status(err);
  EXPECT_EQ(st.http_status, 404);
  EXPECT_EQ(st.message, "not_found");
}

TEST(ErrorPublicStatus, ServerErrorsGiveGenericText) {
  struct row {
    code c;
    std::string text;
  };
  const std::vector<row> rows = {
      {code::internal, "internal error"},
      {code::panic, "internal error"},
      {code::unavailable, "service unavailable"},
      {code::deadline_exceeded, "deadline exceeded"},
      {code::resource_exhausted, "resource exhausted"},
      {code::unimplemented, "not implemented"},
      {code::unknown, "unknown error"},
      {code::data_loss, "data loss"},
  };
  for (const auto& r : rows) {
    auto leaf = keel::make_error(code::internal, "db at 10.0.0.7 says password=hunter2");
    auto err = keel::wrap(keel::wrap(leaf, r.c, "calling ledger at 10.0.0.8"), "handler");
    auto st = keel::to_public_status(err);
    EXPECT_EQ(st.message, r.text) << keel::to_string(r.c);
    EXPECT_THAT(st.message, Not(HasSubstr("hunter2")));
    EXPECT_THAT(st.message, Not(HasSubstr("10.0.0")));
  }
}

TEST(ErrorPublicStatus, PublicMessageWinsEvenDeepInTheTree) {
  auto deep = keel::with_detail(keel::unavailable_error("db down: password=hunter2"),
                                keel::public_message{"the ledger is down, try later"});
  auto chain = keel::wrap(keel::wrap(deep, "stage 2"), code::internal, "stage 1");
  auto err = keel::join(keel::internal_error("other"), chain);
  auto st = keel::to_public_status(err);
  EXPECT_EQ(st.http_status, 500);
  EXPECT_EQ(st.message, "the ledger is down, try later");
}

TEST(ErrorPublicStatus, PublicMessageWinsOverClientMessage) {
  auto err = keel::with_detail(keel::invalid_argument_error("field x=<script>"),
                               keel::public_message{"field x is invalid"});
  EXPECT_EQ(keel::to_public_status(err).message, "field x is invalid");
}

TEST(ErrorPublicStatus, MessageIsCutTo200Bytes) {
  auto st = keel::to_public_status(keel::invalid_argument_error(std::string(1000, 'x')));
  EXPECT_EQ(st.message, std::string(200, 'x'));
  auto pm =
      keel::with_detail(keel::internal_error("x"), keel::public_message{std::string(300, 'y')});
  EXPECT_EQ(keel::to_public_status(pm).message.size(), 200u);
}

TEST(ErrorPublicStatus, CutDoesNotSplitUtf8) {
  // 199 ASCII bytes then a 2-byte character: it does not fit and is dropped
  // whole rather than cut in half.
  auto text = std::string(199, 'a') + "\xC3\xA9" + "tail";
  auto st = keel::to_public_status(keel::invalid_argument_error(text));
  EXPECT_EQ(st.message, std::string(199, 'a'));
  auto fits = std::string(198, 'a') + "\xC3\xA9";
  EXPECT_EQ(keel::to_public_status(keel::invalid_argument_error(fits)).message, fits);
}

TEST(ErrorPublicStatus, ControlCharactersBecomeSpaces) {
  auto err = keel::invalid_argument_error("bad\r\nSet-Cookie: x\t\x01\x7f"
                                          "end\xC2\x85!");
  EXPECT_EQ(keel::to_public_status(err).message, "bad  Set-Cookie: x   end !");
  auto pm = keel::with_detail(keel::internal_error("x"), keel::public_message{"a\nb"});
  EXPECT_EQ(keel::to_public_status(pm).message, "a b");
}

TEST(ErrorPublicStatus, NonControlUtf8IsKept) {
  auto err = keel::invalid_argument_error("caf\xC3\xA9 \xE2\x82\xAC 5");
  EXPECT_EQ(keel::to_public_status(err).message, "caf\xC3\xA9 \xE2\x82\xAC 5");
}

// -- std::error_code --------------------------------------------------------------

struct errc_row {
  std::errc e;
  code c;
};

const std::vector<errc_row> errc_table = {
    {std::errc::timed_out, code::deadline_exceeded},
    {std::errc::connection_refused, code::unavailable},
    {std::errc::connection_reset, code::unavailable},
    {std::errc::connection_aborted, code::unavailable},
    {std::errc::host_unreachable, code::unavailable},
    {std::errc::network_unreachable, code::unavailable},
    {std::errc::network_down, code::unavailable},
    {std::errc::resource_unavailable_try_again, code::unavailable},
    {std::errc::broken_pipe, code::unavailable},
    {std::errc::not_connected, code::unavailable},
    {std::errc::interrupted, code::unavailable},
    {std::errc::no_such_file_or_directory, code::not_found},
    {std::errc::no_such_device, code::not_found},
    {std::errc::invalid_argument, code::invalid_argument},
    {std::errc::permission_denied, code::permission_denied},
    {std::errc::operation_not_permitted, code::permission_denied},
    {std::errc::no_space_on_device, code::resource_exhausted},
    {std::errc::too_many_files_open, code::resource_exhausted},
    {std::errc::not_enough_memory, code::resource_exhausted},
    {std::errc::too_many_files_open_in_system, code::resource_exhausted},
    {std::errc::file_exists, code::already_exists},
    {std::errc::operation_canceled, code::cancelled},
    {std::errc::directory_not_empty, code::failed_precondition},
    {std::errc::read_only_file_system, code::failed_precondition},
    {std::errc::device_or_resource_busy, code::failed_precondition},
    {std::errc::not_supported, code::unimplemented},
    {std::errc::function_not_supported, code::unimplemented},
    {std::errc::operation_not_supported, code::unimplemented},
    {std::errc::result_out_of_range, code::out_of_range},
    {std::errc::io_error, code::internal},
    {std::errc::no_lock_available, code::unknown},
    {std::errc::protocol_error, code::unknown},
};

TEST(ErrorFromErrorCode, MapsErrnoInGenericAndSystemCategories) {
  for (const auto& row : errc_table) {
    auto generic = std::make_error_code(row.e);
    auto system = std::error_code{generic.value(), std::system_category()};
    for (const auto& ec : {generic, system}) {
      auto err = keel::from_error_code(ec);
      EXPECT_EQ(err.code(), row.c) << ec.category().name() << " " << ec.message();
      EXPECT_EQ(err.category(), "keel");
      EXPECT_EQ(err.message(), ec.message());
    }
  }
}

TEST(ErrorFromErrorCode, AttachesOrigin) {
  auto ec = std::error_code{ECONNREFUSED, std::system_category()};
  auto err = keel::from_error_code(ec);
  auto info = keel::as<keel::std_error_info>(err);
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->category, "system");
  EXPECT_EQ(info->value, ECONNREFUSED);
}

TEST(ErrorFromErrorCode, ContextPrefixesMessage) {
  auto ec = std::make_error_code(std::errc::no_such_file_or_directory);
  auto err = keel::from_error_code(ec, "opening /etc/keel.json");
  EXPECT_EQ(err.message(), "opening /etc/keel.json: " + ec.message());
  EXPECT_THAT(err, keel::testing::FailedWith(code::not_found));
}

TEST(ErrorFromErrorCode, ZeroIsEmpty) {
  EXPECT_THAT(keel::from_error_code(std::error_code{}), keel::testing::IsOk());
  EXPECT_THAT(keel::from_error_code(std::error_code{0, std::generic_category()}, "ctx"),
              keel::testing::IsOk());
}

TEST(ErrorFromErrorCode, KeelCategoryValuesAreCodes) {
  for (uint8_t v = 1; v <= keel::max_canonical_code; ++v) {
    auto c = static_cast<code>(v);
    std::error_code ec = c;
    EXPECT_EQ(keel::from_error_code(ec).code(), c);
  }
  EXPECT_EQ(keel::from_error_code({99, keel::canonical_std_category()}).code(), code::unknown);
  EXPECT_EQ(keel::from_error_code({-1, keel::canonical_std_category()}).code(), code::unknown);
}

TEST(ErrorFromErrorCode, ForeignCategoryIsUnknown) {
  auto err = keel::from_error_code(std::make_error_code(std::future_errc::broken_promise));
  EXPECT_EQ(err.code(), code::unknown);
  EXPECT_EQ(keel::as<keel::std_error_info>(err)->category, "future");
}

TEST(ErrorToErrorCode, RoundTripsGenericAndSystem) {
  for (const auto& row : errc_table) {
    auto generic = std::make_error_code(row.e);
    auto system = std::error_code{generic.value(), std::system_category()};
    for (const auto& ec : {generic, system}) {
      auto back = keel::to_error_code(keel::from_error_code(ec, "ctx"));
      EXPECT_EQ(back, ec) << ec.category().name() << " " << ec.message();
      EXPECT_EQ(&back.category(), &ec.category());
    }
  }
}

TEST(ErrorToErrorCode, SurvivesWrap) {
  auto ec = std::error_code{ETIMEDOUT, std::system_category()};
  auto err = keel::wrap(keel::wrap(keel::from_error_code(ec), "read"), "load config");
  EXPECT_EQ(keel::to_error_code(err), ec);
}

TEST(ErrorToErrorCode, ReclassifiedWrapGivesCanonicalCode) {
  auto ec = std::error_code{ENOENT, std::system_category()};
  auto err = keel::wrap(keel::from_error_code(ec), code::internal, "state file missing");
  auto back = keel::to_error_code(err);
  EXPECT_EQ(&back.category(), &keel::canonical_std_category());
  EXPECT_EQ(back.value(), static_cast<int>(code::internal));
}

TEST(ErrorToErrorCode, CanonicalCategoryOtherwise) {
  for (uint8_t v = 1; v <= keel::max_canonical_code; ++v) {
    auto c = static_cast<code>(v);
    auto ec = keel::to_error_code(keel::make_error(c, "x"));
    EXPECT_EQ(&ec.category(), &keel::canonical_std_category());
    EXPECT_EQ(ec.value(), v);
    EXPECT_EQ(ec, std::error_code{c});
    EXPECT_EQ(keel::from_error_code(ec).code(), c);
  }
  // A foreign std category is not reproduced: it cannot be found by name.
  auto err = keel::from_error_code(std::make_error_code(std::future_errc::broken_promise));
  auto ec = keel::to_error_code(err);
  EXPECT_EQ(&ec.category(), &keel::canonical_std_category());
  EXPECT_EQ(ec.value(), static_cast<int>(code::unknown));
}

TEST(ErrorToErrorCode, EmptyIsDefault) {
  EXPECT_EQ(keel::to_error_code(keel::error{}), std::error_code{});
  EXPECT_FALSE(keel::to_error_code(keel::error{}));
}

} // namespace
