#include "keel/error/caf.hpp"

#include <chrono>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "keel/error/format.hpp"
#include "keel/error/panic.hpp"
#include "keel/testing/matchers.hpp"
#include "test_types.hpp"

namespace {

using keel::code;
using keel_test::db_errc;
using keel_test::http_call;
using ::testing::HasSubstr;

// Every wait in these tests is bounded by this, so a broken exchange fails
// the test instead of hanging it.
constexpr auto time_limit = std::chrono::seconds(10);

struct test_config : caf::actor_system_config {
  test_config() {
    keel::add_error_types(*this);
    set("scheduler.max-threads", 2);
  }
};

struct network_config : test_config {
  network_config() {
    load<caf::io::middleman>();
    set("middleman.workers", 0);
  }
};

/// One actor system per test: nothing leaks from one test into the next, and
/// the destructor checks that every actor has terminated.
class CafError : public ::testing::Test {
protected:
  /// Serializes `x` with CAF's binary serializer and reads it back into a
  /// fresh value, as a peer would.
  template <class T>
  T round_trip(const T& x) {
    std::vector<char> buf;
    caf::binary_serializer sink{sys_, buf};
    T in = x;
    if (auto err = sink(in))
      ADD_FAILURE() << "serializing failed: " << sys_.render(err);
    T out;
    caf::binary_deserializer source{sys_, buf};
    if (auto err = source(out))
      ADD_FAILURE() << "deserializing failed: " << sys_.render(err);
    EXPECT_EQ(source.remaining(), 0u);
    return out;
  }

  /// Serializes a wire form as `keel::error`'s inspect would, to feed
  /// hand-made (malformed) input to the deserializer.
  std::vector<char> wire_bytes(std::vector<keel::detail::wire_node> nodes) {
    std::vector<char> buf;
    caf::binary_serializer sink{sys_, buf};
    if (auto err = sink(nodes))
      ADD_FAILURE() << sys_.render(err);
    return buf;
  }

  test_config cfg_;
  caf::actor_system sys_{cfg_};
};

keel::error sample_error() {
  auto leaf = keel::with_detail(keel::unavailable_error("db down"), http_call{"/pay", 503});
  auto wrapped =
      keel::with_detail(keel::wrap(leaf, "stage load"), keel::stage_info{"load", "item-7", 2});
  return keel::join(wrapped, keel::invalid_argument_error("bad date"));
}

// -- binary round trips -----------------------------------------------------------

TEST_F(CafError, RoundTripsEmpty) {
  auto copy = round_trip(keel::error{});
  EXPECT_THAT(copy, keel::testing::IsOk());
}

TEST_F(CafError, RoundTripsLeaf) {
  auto err = keel::not_found_error("user 42");
  auto copy = round_trip(err);
  EXPECT_EQ(copy, err);
  EXPECT_FALSE(copy.same_node(err));
  EXPECT_EQ(copy.code(), code::not_found);
  EXPECT_EQ(copy.category(), "keel");
  EXPECT_EQ(copy.code_name(), "not_found");
  EXPECT_EQ(copy.message(), "user 42");
}

TEST_F(CafError, RoundTripsWrapChain) {
  auto err = keel::wrap(keel::wrap(keel::unavailable_error("refused"), "connect"),
                        code::deadline_exceeded, "fetch");
  auto copy = round_trip(err);
  EXPECT_EQ(copy, err);
  EXPECT_EQ(copy.code(), code::deadline_exceeded);
  EXPECT_EQ(copy.cause().cause().message(), "refused");
  EXPECT_EQ(keel::to_string(copy), keel::to_string(err));
}

TEST_F(CafError, RoundTripsJoinOfJoins) {
  auto a = keel::join(keel::internal_error("a1"), keel::unavailable_error("a2"));
  // A join with a detail is kept as a node of its own rather than flattened.
  auto b = keel::with_detail(keel::join(keel::not_found_error("b1"), keel::aborted_error("b2")),
                             keel::stage_info{"b", "", 1});
  auto c = keel::join(keel::wrap(a, "ctx a"), b, keel::cancelled_error("c"));
  ASSERT_TRUE(c.is_join());
  ASSERT_TRUE(c.children()[1].is_join());
  auto copy = round_trip(c);
  EXPECT_EQ(copy, c);
  EXPECT_EQ(keel::node_count(copy), keel::node_count(c));
  EXPECT_TRUE(copy.children()[1].is_join());
  // A flattened join survives too.
  auto flat = keel::join(a, keel::join(keel::data_loss_error("d1"), keel::panic_error("d2")));
  EXPECT_EQ(round_trip(flat), flat);
}

TEST_F(CafError, RoundTripsThousandChildJoin) {
  std::vector<keel::error> errs;
  for (int i = 0; i < 1000; ++i)
    errs.push_back(keel::invalid_argument_error("row " + std::to_string(i)));
  auto err = keel::join(std::move(errs));
  ASSERT_EQ(err.children().size(), 1000u);
  auto copy = round_trip(err);
  EXPECT_EQ(copy, err);
  EXPECT_EQ(copy.children()[999].message(), "row 999");
}

TEST_F(CafError, RoundTripsDeepChain) {
  auto err = keel::internal_error("root");
  for (int i = 0; i < 200; ++i)
    err = keel::wrap(err, "level " + std::to_string(i));
  auto copy = round_trip(err);
  EXPECT_EQ(copy, err);
  EXPECT_EQ(keel::node_count(copy), 201u);
  EXPECT_EQ(copy.message(), "level 199");
}

TEST_F(CafError, RoundTripsBuiltinDetails) {
  auto panic = keel::make_panic_error(std::make_exception_ptr(std::runtime_error("x")));
  auto orig_panic = keel::as<keel::panic_info>(panic);
  ASSERT_TRUE(orig_panic.has_value());
  ASSERT_FALSE(orig_panic->stack.empty());
  auto err = keel::join(
      keel::with_detail(keel::wrap(panic, "handler"), keel::stage_info{"parse", "row-3", 1}),
      keel::with_detail(keel::unavailable_error("db"), keel::public_message{"try later"}));
  auto copy = round_trip(err);
  EXPECT_EQ(copy, err);
  EXPECT_EQ(keel::as<keel::stage_info>(copy), (keel::stage_info{"parse", "row-3", 1}));
  EXPECT_EQ(keel::as<keel::public_message>(copy), keel::public_message{"try later"});
  auto p = keel::as<keel::panic_info>(copy);
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->exception_type, "std::runtime_error");
  EXPECT_EQ(p->what, "x");
  EXPECT_EQ(p->site, orig_panic->site);
  EXPECT_EQ(p->stack.lines(), orig_panic->stack.lines());
  EXPECT_EQ(*p, *orig_panic);
}

TEST_F(CafError, RoundTripsUserDetail) {
  auto err = keel::with_detail(keel::unavailable_error("upstream"), http_call{"/pay", 503});
  auto copy = round_trip(err);
  EXPECT_EQ(copy, err);
  EXPECT_EQ(keel::as<http_call>(copy), (http_call{"/pay", 503}));
}

TEST_F(CafError, RoundTripsApplicationCategory) {
  auto err = keel::wrap(keel::make_error(db_errc::constraint_violation, "unique key"),
                        db_errc::connection_lost, "retrying");
  auto copy = round_trip(err);
  EXPECT_EQ(copy, err);
  EXPECT_EQ(copy.category(), "test.db");
  EXPECT_EQ(copy.value(), 1);
  EXPECT_EQ(copy.code_name(), "connection_lost");
  EXPECT_EQ(copy.code(), code::unavailable);
  EXPECT_EQ(copy.cause().code_name(), "constraint_violation");
  EXPECT_EQ(copy.cause().code(), code::failed_precondition);
  EXPECT_TRUE(keel::is(copy, db_errc::constraint_violation));
  EXPECT_EQ(keel::as<db_errc>(copy), db_errc::connection_lost);
}

TEST_F(CafError, RoundTripsForeignCategory) {
  auto err = keel::error_builder{"peer.billing", 9, "card_declined", code::failed_precondition}
                 .message("card 4242 declined")
                 .build();
  auto copy = round_trip(err);
  EXPECT_EQ(copy, err);
  EXPECT_EQ(copy.category(), "peer.billing");
  EXPECT_EQ(copy.value(), 9);
  EXPECT_EQ(copy.code_name(), "card_declined");
  EXPECT_EQ(copy.code(), code::failed_precondition);
  EXPECT_EQ(copy.message(), "card 4242 declined");
  // And once more: a foreign node read from the wire writes the same wire form.
  EXPECT_EQ(round_trip(copy), err);
}

TEST_F(CafError, RoundTripsInsideMessage) {
  auto err = sample_error();
  auto msg = caf::make_message(std::string{"job"}, err, 7);
  auto copy = round_trip(msg);
  ASSERT_TRUE((copy.match_elements<std::string, keel::error, int>()));
  EXPECT_EQ(copy.get_as<keel::error>(1), err);
  EXPECT_EQ(copy.get_as<int>(2), 7);
  // Messages render through keel::to_string.
  EXPECT_THAT(caf::to_string(copy), HasSubstr(keel::to_string(err)));
}

TEST_F(CafError, TruncatedInputFailsCleanly) {
  std::vector<char> buf;
  caf::binary_serializer sink{sys_, buf};
  auto err = sample_error();
  ASSERT_FALSE(sink(err));
  for (std::size_t n : {std::size_t{0}, std::size_t{1}, buf.size() / 2, buf.size() - 1}) {
    keel::error out;
    caf::binary_deserializer source{sys_, buf.data(), n};
    EXPECT_TRUE(source(out)) << "a prefix of " << n << " bytes deserialized";
  }
}

// -- caf::error -------------------------------------------------------------------

TEST_F(CafError, ToCafErrorCarriesCanonicalCodeAndError) {
  auto err = sample_error();
  auto x = keel::to_caf_error(err);
  ASSERT_TRUE(x);
  EXPECT_EQ(x.category(), keel::caf_category);
  EXPECT_EQ(x.code(), static_cast<uint8_t>(code::unavailable));
  ASSERT_TRUE(x.context().match_elements<keel::error>());
  EXPECT_TRUE(x.context().get_as<keel::error>(0).same_node(err));
  EXPECT_TRUE(keel::from_caf_error(x).same_node(err));
  EXPECT_FALSE(keel::to_caf_error(keel::error{}));
  EXPECT_THAT(keel::from_caf_error(caf::error{}), keel::testing::IsOk());
}

TEST_F(CafError, RendersKeelCategory) {
  auto err = sample_error();
  EXPECT_EQ(sys_.render(keel::to_caf_error(err)), "keel: " + keel::to_string(err));
  EXPECT_EQ(sys_.render(caf::error{14, keel::caf_category}), "keel: unavailable");
  EXPECT_EQ(sys_.render(caf::error{99, keel::caf_category}), "keel: code 99");
}

TEST_F(CafError, CafErrorRoundTripIsLossless) {
  auto err = sample_error();
  auto x = round_trip(keel::to_caf_error(err));
  ASSERT_TRUE(x);
  EXPECT_EQ(x.category(), keel::caf_category);
  auto back = keel::from_caf_error(x);
  EXPECT_EQ(back, err);
  EXPECT_EQ(keel::as<http_call>(back), (http_call{"/pay", 503}));
  EXPECT_EQ(keel::as<keel::stage_info>(back), (keel::stage_info{"load", "item-7", 2}));
}

TEST_F(CafError, KeelCategoryWithoutContextKeepsCode) {
  auto err = keel::from_caf_error(caf::error{5, keel::caf_category});
  EXPECT_EQ(err.category(), "keel");
  EXPECT_EQ(err.code(), code::not_found);
  EXPECT_EQ(keel::from_caf_error(caf::error{200, keel::caf_category}).code(), code::unknown);
}

struct sec_row {
  caf::sec s;
  code c;
};

TEST_F(CafError, FromSec) {
  const std::vector<sec_row> rows = {
      {caf::sec::request_timeout, code::deadline_exceeded},
      {caf::sec::request_receiver_down, code::unavailable},
      {caf::sec::cannot_connect_to_node, code::unavailable},
      {caf::sec::no_route_to_receiving_node, code::unavailable},
      {caf::sec::remote_linking_failed, code::unavailable},
      {caf::sec::disconnect_during_handshake, code::unavailable},
      {caf::sec::connection_timeout, code::unavailable},
      {caf::sec::unexpected_message, code::invalid_argument},
      {caf::sec::unexpected_response, code::invalid_argument},
      {caf::sec::invalid_argument, code::invalid_argument},
      {caf::sec::no_actor_published_at_port, code::not_found},
      {caf::sec::redundant_connection, code::already_exists},
      {caf::sec::incompatible_versions, code::failed_precondition},
      {caf::sec::feature_disabled, code::unimplemented},
      {caf::sec::malformed_basp_message, code::data_loss},
      {caf::sec::runtime_error, code::panic},
      {caf::sec::unknown_type, code::internal},
      {caf::sec::unhandled_stream_error, code::unknown},
  };
  for (const auto& row : rows) {
    auto x = caf::make_error(row.s);
    auto err = keel::from_caf_error(x);
    EXPECT_EQ(err.category(), "system");
    EXPECT_EQ(err.value(), static_cast<uint8_t>(row.s));
    EXPECT_EQ(err.code_name(), caf::to_string(row.s));
    EXPECT_EQ(err.code(), row.c) << caf::to_string(row.s);
    EXPECT_EQ(err.message(), caf::to_string(x));
  }
}

TEST_F(CafError, EverySecMapsToAnErrorThatSurvivesTheWire) {
  for (uint8_t v = 1; v <= static_cast<uint8_t>(caf::sec::connection_timeout); ++v) {
    auto s = static_cast<caf::sec>(v);
    auto err = keel::from_caf_error(caf::make_error(s));
    EXPECT_NE(err.code(), code::ok);
    EXPECT_EQ(err.code_name(), caf::to_string(s));
    EXPECT_EQ(round_trip(err), err) << caf::to_string(s);
  }
  // A code from a newer CAF.
  auto err = keel::from_caf_error(caf::error{200, caf::atom("system")});
  EXPECT_EQ(err.code(), code::unknown);
  EXPECT_EQ(err.code_name(), "code 200");
}

TEST_F(CafError, FromExitReason) {
  using caf::exit_reason;
  const std::vector<std::pair<exit_reason, code>> rows = {
      {exit_reason::unhandled_exception, code::panic},
      {exit_reason::unknown, code::unknown},
      {exit_reason::out_of_workers, code::resource_exhausted},
      {exit_reason::user_shutdown, code::cancelled},
      {exit_reason::kill, code::cancelled},
      {exit_reason::remote_link_unreachable, code::unavailable},
      {exit_reason::unreachable, code::unavailable},
  };
  for (const auto& [r, c] : rows) {
    auto err = keel::from_caf_error(caf::make_error(r));
    EXPECT_EQ(err.category(), "exit");
    EXPECT_EQ(err.value(), static_cast<uint8_t>(r));
    EXPECT_EQ(err.code_name(), caf::to_string(r));
    EXPECT_EQ(err.code(), c) << caf::to_string(r);
    EXPECT_EQ(round_trip(err), err);
  }
  // A normal exit is no error in CAF either: its caf::error is empty.
  EXPECT_FALSE(caf::make_error(exit_reason::normal));
  EXPECT_THAT(keel::from_caf_error(caf::make_error(exit_reason::normal)), keel::testing::IsOk());
}

TEST_F(CafError, FromOtherCategories) {
  auto parser = keel::from_caf_error(caf::make_error(caf::pec::unexpected_eof));
  EXPECT_EQ(parser.category(), "parser");
  EXPECT_EQ(parser.code_name(), "unexpected_eof");
  EXPECT_EQ(parser.code(), code::invalid_argument);
  auto other = keel::from_caf_error(caf::error{3, caf::atom("mylib")});
  EXPECT_EQ(other.category(), "mylib");
  EXPECT_EQ(other.value(), 3);
  EXPECT_EQ(other.code_name(), "code 3");
  EXPECT_EQ(other.code(), code::unknown);
  EXPECT_EQ(round_trip(other), other);
}

TEST_F(CafError, MessageIncludesContext) {
  auto x = caf::make_error(caf::sec::cannot_connect_to_node, std::string{"10.0.0.1:4242"});
  auto err = keel::from_caf_error(x);
  EXPECT_THAT(std::string{err.message()}, HasSubstr("10.0.0.1:4242"));
}

// -- malformed wire input ---------------------------------------------------------

keel::detail::wire_node leaf_node(uint8_t c, std::string message = "m") {
  keel::detail::wire_node n;
  n.category = "keel";
  n.value = c;
  n.canonical = c;
  n.message = std::move(message);
  return n;
}

void expect_malformed(const std::vector<keel::detail::wire_node>& nodes, const std::string& what) {
  auto err = keel::detail::from_wire(nodes);
  EXPECT_EQ(err.code(), code::data_loss) << keel::to_string(err);
  EXPECT_THAT(std::string{err.message()}, HasSubstr(what));
}

TEST_F(CafError, MalformedWireChildrenPastTheEnd) {
  auto top = leaf_node(13);
  top.flags = 2;
  top.children = 3;
  expect_malformed({top, leaf_node(3), leaf_node(5)}, "announces 3 subtrees");
  auto cause = leaf_node(13);
  cause.flags = 1;
  expect_malformed({cause}, "announces 1 subtrees");
  // Counts that fit locally but not overall.
  auto outer = leaf_node(14);
  outer.flags = 2;
  outer.children = 2;
  auto first = leaf_node(14);
  first.flags = 1;
  expect_malformed({outer, first, leaf_node(3)}, "incomplete");
}

TEST_F(CafError, MalformedWireCanonicalOutOfRange) {
  auto n = leaf_node(3);
  n.category = "peer.cat";
  n.canonical = 18;
  expect_malformed({n}, "canonical code 18");
  n.canonical = 0;
  expect_malformed({n}, "canonical code 0");
}

TEST_F(CafError, MalformedWireKeelValueOutOfRange) {
  auto n = leaf_node(3);
  n.value = 42;
  expect_malformed({n}, "value 42");
}

TEST_F(CafError, MalformedWireTrailingNodes) {
  expect_malformed({leaf_node(3), leaf_node(5)}, "follows a complete error tree");
}

TEST_F(CafError, MalformedWireBadDetailJson) {
  auto n = leaf_node(3);
  n.details.push_back({"keel.stage", "{\"stage\": "});
  expect_malformed({n}, "not valid JSON");
}

TEST_F(CafError, MalformedWireThroughDeserializer) {
  auto n = leaf_node(3);
  n.value = 42;
  auto buf = wire_bytes({n});
  keel::error out;
  caf::binary_deserializer source{sys_, buf};
  // The error is the payload's value, not a deserialization failure: a bad
  // error from a peer must not take down the connection.
  EXPECT_FALSE(source(out));
  EXPECT_EQ(out.code(), code::data_loss);
  EXPECT_THAT(std::string{out.message()}, HasSubstr("value 42"));
}

// -- actors -----------------------------------------------------------------------

// Actors here get their state as spawn arguments rather than lambda captures:
// CAF 0.17 dereferences a null argument tuple when a function-based actor is
// spawned without arguments (caf/detail/init_fun_factory.hpp), which UBSan
// reports as a null reference binding.

/// Fails every request with `err`.
caf::behavior failing_server(keel::error err) {
  return {[err](int) -> caf::result<int> { return keel::to_caf_error(err); }};
}

TEST_F(CafError, RequestFailsWithKeelError) {
  auto err = sample_error();
  auto server = sys_.spawn(failing_server, err);
  caf::scoped_actor self{sys_};
  std::optional<keel::error> got;
  self->request(server, time_limit, 1)
      .receive([&](int) { ADD_FAILURE() << "the request succeeded"; },
               [&](caf::error& x) { got = keel::from_caf_error(x); });
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(*got, err);
  EXPECT_EQ(keel::as<keel::stage_info>(*got), (keel::stage_info{"load", "item-7", 2}));
  EXPECT_EQ(keel::as<http_call>(*got), (http_call{"/pay", 503}));
  self->send_exit(server, caf::exit_reason::user_shutdown);
}

using lookup_actor = caf::typed_actor<caf::replies_to<std::string>::with<int>>;

TEST_F(CafError, TypedRequestFailsThroughPromise) {
  auto lookup = [](lookup_actor::pointer self,
                   std::string public_text) -> lookup_actor::behavior_type {
    return {[self, public_text](const std::string& key) -> caf::result<int> {
      auto rp = self->make_response_promise<int>();
      rp.deliver(keel::to_caf_error(keel::with_detail(keel::not_found_error("no key " + key),
                                                      keel::public_message{public_text})));
      return rp;
    }};
  };
  auto server = sys_.spawn(lookup, std::string{"unknown key"});
  caf::scoped_actor self{sys_};
  keel::error got;
  self->request(server, time_limit, std::string{"k1"})
      .receive([&](int) { ADD_FAILURE() << "the request succeeded"; },
               [&](caf::error& x) { got = keel::from_caf_error(x); });
  EXPECT_THAT(got, keel::testing::FailedWith(code::not_found, HasSubstr("no key k1")));
  EXPECT_EQ(keel::as<keel::public_message>(got), keel::public_message{"unknown key"});
  self->send_exit(server, caf::exit_reason::user_shutdown);
}

TEST_F(CafError, ExitReasonCarriesKeelError) {
  auto err =
      keel::with_detail(keel::internal_error("invariant broken"), keel::stage_info{"emit", "", 1});
  caf::scoped_actor self{sys_};
  auto quitter = [](caf::event_based_actor* a, keel::error reason) {
    return caf::behavior{[a, reason](int) { a->quit(keel::to_caf_error(reason)); }};
  };
  auto worker = self->spawn<caf::monitored>(quitter, err);
  self->send(worker, 1);
  std::optional<keel::error> got;
  self->receive([&](caf::down_msg& dm) { got = keel::from_caf_error(dm.reason); },
                caf::after(time_limit) >> [] { ADD_FAILURE() << "no down message"; });
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(*got, err);
}

// Two actor systems in one process, connected through the middleman over
// loopback TCP: the error crosses a real BASP connection.
TEST(CafErrorNetwork, RemoteRequestFailsWithKeelError) {
  auto err = sample_error();
  network_config server_cfg;
  caf::actor_system server_sys{server_cfg};
  network_config client_cfg;
  caf::actor_system client_sys{client_cfg};
  auto server = server_sys.spawn(failing_server, err);
  auto port = server_sys.middleman().publish(server, 0, "127.0.0.1");
  ASSERT_TRUE(port) << server_sys.render(port.error());
  auto proxy = client_sys.middleman().remote_actor("127.0.0.1", *port);
  ASSERT_TRUE(proxy) << client_sys.render(proxy.error());
  {
    caf::scoped_actor self{client_sys};
    std::optional<keel::error> got;
    self->request(*proxy, time_limit, 1)
        .receive([&](int) { ADD_FAILURE() << "the request succeeded"; },
                 [&](caf::error& x) { got = keel::from_caf_error(x); });
    ASSERT_TRUE(got.has_value());
    EXPECT_EQ(*got, err);
    EXPECT_FALSE(got->same_node(err));
    EXPECT_EQ(keel::as<http_call>(*got), (http_call{"/pay", 503}));
    EXPECT_EQ(keel::as<keel::stage_info>(*got), (keel::stage_info{"load", "item-7", 2}));
  }
  server_sys.middleman().unpublish(server, *port);
  caf::anon_send_exit(server, caf::exit_reason::user_shutdown);
}

} // namespace
