// The keel error model on a small batch: twelve order rows go through three
// stages (parse, validate, price) written as plain functions; every failure
// is kept, attributed, counted, printed, serialized and mapped to a status.
//
// Also a CTest smoke test: every claim the output makes is checked, and a
// failed check exits non-zero with a message on stderr, so the example cannot
// drift from the library without someone noticing.
//
// See docs/error-model.md for the model behind each section.

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <iomanip>
#include <iostream>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json.hpp>

#include "keel/error.hpp"

// -- the application's error category -----------------------------------------

namespace shop {

/// Failures of the order importer. The values are pinned: they are written to
/// JSON and journals, and a peer decodes them by number.
enum class order_errc : uint8_t {
  /// The row is not an order row (field count, numbers).
  malformed_row = 1,
  /// The quantity is outside 1..100.
  bad_quantity = 2,
  /// The SKU is not in the catalogue.
  unknown_sku = 3,
  /// The destination country cannot be shipped to.
  embargoed = 4,
  /// The pricing service refused or dropped the connection.
  pricing_down = 5,
  /// The pricing service did not answer in time.
  pricing_timeout = 6,
};

} // namespace shop

// Each code names the canonical code that carries its meaning, so keel's
// retry advice, summaries and status mapping understand codes they never saw.
template <>
struct keel::error_code_enum<shop::order_errc> {
  static constexpr std::string_view category = "shop.orders";

  static std::string_view name(shop::order_errc e) noexcept {
    switch (e) {
      case shop::order_errc::malformed_row:
        return "malformed_row";
      case shop::order_errc::bad_quantity:
        return "bad_quantity";
      case shop::order_errc::unknown_sku:
        return "unknown_sku";
      case shop::order_errc::embargoed:
        return "embargoed";
      case shop::order_errc::pricing_down:
        return "pricing_down";
      case shop::order_errc::pricing_timeout:
        return "pricing_timeout";
    }
    return "unknown";
  }

  static keel::code canonical(shop::order_errc e) noexcept {
    switch (e) {
      case shop::order_errc::malformed_row:
      case shop::order_errc::bad_quantity:
        return keel::code::invalid_argument;
      case shop::order_errc::unknown_sku:
        return keel::code::not_found;
      case shop::order_errc::embargoed:
        return keel::code::failed_precondition;
      case shop::order_errc::pricing_down:
        return keel::code::unavailable;
      case shop::order_errc::pricing_timeout:
        return keel::code::deadline_exceeded;
    }
    return keel::code::unknown;
  }
};

namespace {

using shop::order_errc;

// -- checks ---------------------------------------------------------------------

/// Counts checks and reports failures on stderr; the exit code comes from it.
class checker {
public:
  void operator()(bool ok, std::string_view what) {
    ++total_;
    if (!ok) {
      ++failed_;
      std::cerr << "error_model: check failed: " << what << '\n';
    }
  }

  int total() const { return total_; }
  int failed() const { return failed_; }

private:
  int total_ = 0;
  int failed_ = 0;
};

checker check;

// -- output helpers -----------------------------------------------------------------

void heading(std::string_view title) {
  std::cout << '\n' << "== " << title << " ==\n";
}

/// "  label ......: value", aligned so that counts line up.
void field(std::string_view label, const std::string& value) {
  std::cout << "  " << std::left << std::setw(30) << label << value << '\n';
}

std::string yes_no(bool b) {
  return b ? "true" : "false";
}

/// The JSON form laid out node by node: a node's own fields on one line, its
/// details on the next, its cause and children indented below. Still valid
/// JSON, and the tree's shape shows without a 500-character line.
std::string pretty_json(const boost::json::value& v, std::size_t indent = 2) {
  if (!v.is_object())
    return boost::json::serialize(v);
  const auto& o = v.get_object();
  boost::json::object own;
  for (const auto& [key, x] : o)
    if (key != "details" && key != "cause" && key != "errors")
      own[key] = x;
  auto flat = boost::json::serialize(own);
  auto pad = std::string(indent + 1, ' ');
  auto out = "{" + flat.substr(1, flat.size() - 2);
  if (auto d = o.if_contains("details"))
    out += ",\n" + pad + "\"details\":" + boost::json::serialize(*d);
  if (auto c = o.if_contains("cause"))
    out += ",\n" + pad + "\"cause\":" + pretty_json(*c, indent + 1);
  if (auto e = o.if_contains("errors"); e && e->is_array()) {
    out += ",\n" + pad + "\"errors\":[";
    for (std::size_t i = 0; i < e->get_array().size(); ++i)
      out += (i > 0 ? ",\n" : "\n") + pad + "  " + pretty_json(e->get_array()[i], indent + 3);
    out += "]";
  }
  return out + "}";
}

std::string money(int64_t cents) {
  auto frac = std::to_string(cents % 100);
  return std::to_string(cents / 100) + "." + (frac.size() == 1 ? "0" : "") + frac;
}

// -- the data -----------------------------------------------------------------------

// id, sku, quantity, destination, coupon
constexpr std::string_view batch_rows[] = {
    "o-1001,SKU-MUG,2,DE,",
    "o-1002,SKU-MUG,two,FR,",
    "o-1003,SKU-TEE,0,KP,",
    "o-1004,SKU-CHAIR,1,NL,",
    "o-1005,SKU-TEE,3,US,",
    "o-1006,SKU-SOFA,1,DE,",
    "o-1007,SKU-MUG,1,SE,SPRING10",
    "o-1008,SKU-TEE,2,IT,SUMMER25",
    "o-1009,SKU-LAMP,1,ES,",
    "o-1010,SKU-DESK,1,AT,",
    "o-1011,SKU-MUG,1",
    "o-1012,SKU-CHAIR,4,BE,",
};

const std::map<std::string, int64_t, std::less<>> catalogue = {
    {"SKU-MUG", 1299},  {"SKU-TEE", 1950},   {"SKU-CHAIR", 8900},
    {"SKU-LAMP", 3400}, {"SKU-DESK", 21900},
};

const std::map<std::string, int64_t, std::less<>> coupon_percent = {{"SPRING10", 10}};

/// A sentinel, like Go's `var ErrEmbargoed = errors.New(...)`: callers match
/// it with `keel::is(err, embargoed())`, and the match survives JSON because it
/// compares category, code and message rather than addresses.
const keel::error& embargoed() {
  static const keel::error sentinel =
      keel::make_error(order_errc::embargoed, "destination is under embargo");
  return sentinel;
}

struct order {
  std::string id;
  std::string sku;
  int quantity = 0;
  std::string country;
  std::string coupon;
};

struct priced_order {
  order line;
  int64_t total_cents = 0;
};

// -- the stages -----------------------------------------------------------------------

keel::expected<order> parse(std::string_view row) {
  std::vector<std::string_view> fields;
  for (std::size_t start = 0;;) {
    auto comma = row.find(',', start);
    fields.push_back(row.substr(start, comma - start));
    if (comma == std::string_view::npos)
      break;
    start = comma + 1;
  }
  if (fields.size() != 5)
    return keel::make_error(order_errc::malformed_row,
                            "expected 5 fields, got " + std::to_string(fields.size()));
  order o{std::string{fields[0]}, std::string{fields[1]}, 0, std::string{fields[3]},
          std::string{fields[4]}};
  auto q = fields[2];
  auto [end, ec] = std::from_chars(q.data(), q.data() + q.size(), o.quantity);
  if (ec != std::errc{} || end != q.data() + q.size())
    return keel::make_error(order_errc::malformed_row,
                            "quantity \"" + std::string{q} + "\" is not a number");
  return o;
}

/// Reports every problem of the row, not just the first: a person fixing the
/// file wants the whole list (the seed's "validation" case for aggregation).
keel::error validate(const order& o) {
  std::vector<keel::error> problems;
  if (o.quantity < 1 || o.quantity > 100)
    problems.push_back(keel::make_error(
        order_errc::bad_quantity, "quantity " + std::to_string(o.quantity) + " is outside 1..100"));
  if (!catalogue.contains(o.sku))
    // The public message is what an API caller may see (see section 7).
    problems.push_back(keel::with_detail(keel::make_error(order_errc::unknown_sku, o.sku),
                                         keel::public_message{"unknown product " + o.sku}));
  if (o.country == "KP")
    problems.push_back(embargoed());
  return keel::join(std::move(problems)); // empty when the row is fine
}

/// Stands in for a remote pricing service with two faults: the first call
/// for SKU-CHAIR finds the connection dropped, SKU-DESK always times out.
class pricing_service {
public:
  keel::expected<priced_order> price(const order& o) {
    if (o.sku == "SKU-CHAIR" && chair_calls_++ == 0)
      return keel::make_error(order_errc::pricing_down,
                              "connection reset by pricing-svc.internal:8443");
    if (o.sku == "SKU-DESK")
      return keel::make_error(order_errc::pricing_timeout,
                              "pricing-svc.internal:8443 did not answer within 200ms");
    int64_t total = catalogue.find(o.sku)->second * o.quantity;
    if (!o.coupon.empty())
      // A bug kept on purpose: validate() does not check coupons, and .at()
      // throws for an unknown one, as real code does.
      total -= total * coupon_percent.at(o.coupon) / 100;
    return priced_order{o, total};
  }

private:
  int chair_calls_ = 0;
};

/// Adds the stage boundary's context: a message for the one-line form and a
/// `stage_info` for programs. An empty error stays empty, so callers need no
/// `if` around it.
keel::error at_stage(keel::error err, std::string_view stage, const std::string& item_id,
                     uint32_t attempt) {
  auto message = std::string{stage} + " " + item_id;
  return keel::with_detail(keel::wrap(std::move(err), std::move(message)),
                           keel::stage_info{std::string{stage}, item_id, attempt});
}

/// What happened to one row: the result, and the retries it took.
struct row_outcome {
  std::string id;
  keel::expected<priced_order> result;
  std::vector<keel::error> retried; // failed attempts that were retried
};

row_outcome process_row(std::string_view row, pricing_service& pricing) {
  row_outcome out{std::string{row.substr(0, row.find(','))}, keel::expected<priced_order>{}, {}};
  auto parsed = parse(row);
  if (!parsed) {
    out.result = at_stage(parsed.error(), "parse", out.id, 1);
    return out;
  }
  if (auto err = validate(*parsed)) {
    out.result = at_stage(std::move(err), "validate", out.id, 1);
    return out;
  }
  constexpr uint32_t max_attempts = 2;
  for (uint32_t attempt = 1;; ++attempt) {
    // A handler that throws must cost one row, not the batch: the exception
    // becomes a `panic` error carrying its type, what() and a stack trace.
    auto priced = keel::invoke_guarded([&] { return pricing.price(*parsed); });
    if (priced) {
      out.result = std::move(priced);
      return out;
    }
    auto err = at_stage(priced.error(), "price", out.id, attempt);
    // Decide by code, never by message: only transient codes earn a retry.
    if (attempt == max_attempts
        || keel::retry_advice_of(err.code()) != keel::retry_advice::retry_call) {
      out.result = std::move(err);
      return out;
    }
    out.retried.push_back(std::move(err));
  }
}

/// Counts by what to do about a failure, not by whose enum it is:
/// `default_error_class` says "shop.orders.validation" for the shop's codes,
/// and this report wants them next to keel's own "validation".
std::string class_without_category(const keel::error& failure) {
  auto cls = keel::default_error_class(failure);
  return cls.substr(cls.rfind('.') + 1); // npos + 1 == 0: no dot, whole name
}

} // namespace

int main() {
  constexpr std::size_t buffer_cap = 4;
  std::cout << "keel error model: importing " << std::size(batch_rows)
            << " order rows through parse -> validate -> price\n";

  // -- 1. per-row outcomes, collected (none of them stops the batch) -----------
  heading("1. Rows");
  pricing_service pricing;
  keel::error_buffer buffer{buffer_cap};
  keel::error_summary summary{class_without_category};
  std::vector<row_outcome> outcomes;
  std::size_t ok_rows = 0;
  for (auto row : batch_rows) {
    auto out = process_row(row, pricing);
    for (const auto& err : out.retried)
      std::cout << "  " << out.id << "  retry   " << err << "  ["
                << keel::to_string(keel::retry_advice_of(err.code())) << "]\n";
    if (out.result) {
      ++ok_rows;
      const auto& p = *out.result;
      auto attempts = out.retried.size() + 1;
      std::cout << "  " << out.id << "  ok      " << p.line.quantity << " x " << std::left
                << std::setw(10) << p.line.sku << std::right << std::setw(8) << money(p.total_cents)
                << " EUR" << (attempts == 1 ? "" : "  (attempt " + std::to_string(attempts) + ")")
                << '\n';
    } else {
      std::cout << "  " << out.id << "  FAILED  " << out.result.error() << '\n';
      buffer.add(out.result.error());
      summary.add(out.result.error());
    }
    outcomes.push_back(std::move(out));
  }
  auto find = [&](std::string_view id) -> const row_outcome& {
    return *std::find_if(outcomes.begin(), outcomes.end(),
                         [&](const row_outcome& o) { return o.id == id; });
  };
  check(ok_rows == 6, "six rows are priced");
  check(find("o-1004").result.has_value() && find("o-1004").retried.size() == 1,
        "o-1004 succeeds on its second attempt");
  check(find("o-1010").retried.size() == 1
            && keel::as<keel::stage_info>(find("o-1010").result.error())->attempt == 2,
        "o-1010 is retried once and fails on attempt 2");
  check(find("o-1008").retried.empty() && keel::is_panic(find("o-1008").result.error()),
        "the throwing row becomes a panic error and is not retried");

  // -- 2. aggregation ------------------------------------------------------------
  heading("2. Aggregation");
  // The batch boundary adds its own context, as every boundary does.
  auto batch = keel::wrap(buffer.result(), "import orders-0601.csv");
  auto failed_rows = outcomes.size() - ok_rows;
  field("rows ok / failed", std::to_string(ok_rows) + " / " + std::to_string(failed_rows));
  field("errors added / kept",
        std::to_string(buffer.total()) + " / " + std::to_string(buffer.errors().size()) + "  (cap "
            + std::to_string(buffer_cap) + ", " + std::to_string(buffer.overflow()) + " dropped)");
  field("failures by class", summary.to_string());
  field("failures counted",
        std::to_string(summary.total()) + "  (a joined row counts per failure)");
  auto counts = summary.counts();
  check(buffer.total() == 6 && buffer.overflow() == 2, "buffer: 6 added, 2 over the cap");
  check(counts["validation"] == 4 && counts["not_found"] == 1 && counts["panic"] == 1
            && counts["transient"] == 1 && summary.total() == 7,
        "summary: validation 4, not_found 1, panic 1, transient 1");

  // -- 3. one-line form ---------------------------------------------------------
  heading("3. One line (logs)");
  std::cout << "  " << batch << '\n';
  std::cout << "  with max_children = 1:\n  " << keel::format(batch, {.max_children = 1}) << '\n';
  check(keel::to_string(batch).find("(2 more errors)") != std::string::npos,
        "the one-line form says how many errors the cap dropped");

  // -- 4. multi-line form -------------------------------------------------------
  heading("4. Tree (reports)");
  std::cout << keel::format(batch, {.multiline = true, .max_stack_frames = 1}) << '\n';

  // -- 5. queries -----------------------------------------------------------------
  heading("5. Queries (depth-first over cause and children)");
  field("is(panic)", yes_no(keel::is(batch, keel::code::panic)));
  field("is(unknown_sku)", yes_no(keel::is(batch, order_errc::unknown_sku)));
  field("is(embargoed sentinel)", yes_no(keel::is(batch, embargoed())));
  field("is_deadline_exceeded", yes_no(keel::is_deadline_exceeded(batch))
                                    + "  (o-1010 fell over the cap; the summary has it)");
  auto where = keel::as<keel::stage_info>(batch);
  field("as<stage_info>", where ? where->stage + ", item " + where->item_id + ", attempt "
                                      + std::to_string(where->attempt)
                                : "none");
  auto panic = keel::as<keel::panic_info>(batch);
  auto site = [](keel::capture_site s) {
    return s == keel::capture_site::catch_site ? "catch site" : "throw site";
  };
  field("as<panic_info>", panic ? panic->exception_type + ": " + panic->what + " ("
                                      + std::to_string(panic->stack.size()) + " frames, "
                                      + site(panic->site) + ")"
                                : "none");
  std::map<std::string, int> by_stage;
  std::size_t leaf_count = 0;
  keel::visit(
      batch, [&](const keel::stage_info& s) { ++by_stage[s.stage]; },
      [&](const keel::error& n) { leaf_count += (!n.cause() && n.children().empty()) ? 1 : 0; });
  std::string stages;
  for (const auto& [stage, n] : by_stage)
    stages += (stages.empty() ? "" : ", ") + stage + " " + std::to_string(n);
  field("visit: kept errors by stage", stages);
  field("failures / leaves / nodes", std::to_string(keel::failures(batch).size()) + " / "
                                         + std::to_string(keel::leaves(batch).size()) + " / "
                                         + std::to_string(keel::node_count(batch)));
  check(keel::is_panic(batch) && keel::is(batch, order_errc::unknown_sku)
            && keel::is(batch, embargoed()) && !keel::is_deadline_exceeded(batch),
        "is() finds panic, unknown_sku and the sentinel, not the dropped timeout");
  check(where && where->stage == "parse" && where->item_id == "o-1002",
        "as<stage_info> finds the first failure, depth-first");
  check(panic && panic->exception_type == "std::out_of_range" && !panic->stack.empty(),
        "as<panic_info> has the exception type and a stack");
  check(by_stage == std::map<std::string, int>{{"parse", 1}, {"price", 1}, {"validate", 2}},
        "visit dispatches each stage_info once");
  check(keel::failures(batch).size() == 6 && keel::leaves(batch).size() == leaf_count,
        "six failures: five in the kept rows and the overflow note");

  // -- 6. JSON ----------------------------------------------------------------------
  heading("6. JSON (journals, logs, HTTP bodies)");
  const auto& row_err = find("o-1003").result.error();
  auto row_text = pretty_json(keel::to_json(row_err));
  std::cout << "  o-1003 (keel::to_json, laid out by node):\n  " << row_text << '\n';
  auto text = keel::to_json_string(batch);
  auto decoded = keel::error_from_json_string(text);
  bool round_trip = decoded && *decoded == batch;
  field("batch as JSON", std::to_string(text.size()) + " bytes");
  field("read back == original", yes_no(round_trip));
  field("sentinel still matches", yes_no(decoded && keel::is(*decoded, embargoed())));
  // Bad input gets a message with the path of the first bad field.
  auto broken = keel::to_json(row_err);
  broken.at("cause").at("errors").at(1).as_object()["value"] = "four";
  auto rejected = keel::error_from_json(broken);
  field("corrupted JSON rejected",
        rejected ? std::string{"no"} : std::string{rejected.error().message()});
  check(round_trip, "the JSON round trip gives an equal error");
  auto row_decoded = keel::error_from_json_string(row_text);
  check(row_decoded && *row_decoded == row_err, "the printed JSON reads back as the row's error");
  check(decoded && keel::is(*decoded, embargoed())
            && keel::as<keel::panic_info>(*decoded) == keel::as<keel::panic_info>(batch),
        "sentinel and panic details survive JSON");
  check(!rejected && keel::is_invalid_argument(rejected.error())
            && rejected.error().message().starts_with("error.cause.errors[1].value:"),
        "corrupted JSON is rejected with the path of the bad field");

  // -- 7. public status -------------------------------------------------------------
  heading("7. What an HTTP caller sees (internals stay in the logs)");
  std::cout << "  " << std::left << std::setw(8) << "row" << std::setw(6) << "http" << std::setw(6)
            << "grpc" << std::setw(20) << "code"
            << "message\n";
  bool leaked = false;
  for (auto id : {"o-1002", "o-1006", "o-1008", "o-1010"}) {
    const auto& err = find(id).result.error();
    auto st = keel::to_public_status(err);
    std::cout << "  " << std::setw(8) << id << std::setw(6) << st.http_status << std::setw(6)
              << st.grpc_status << std::setw(20) << st.code << st.message << '\n';
    for (auto secret : {"pricing-svc", "out_of_range", "SUMMER25", "map::at"})
      leaked = leaked || st.message.find(secret) != std::string::npos;
  }
  std::cout << std::right;
  check(!leaked, "no public message names a host, an exception or a coupon");
  check(keel::to_public_status(find("o-1008").result.error()).http_status == 500
            && keel::to_public_status(find("o-1010").result.error()).http_status == 504
            && keel::to_public_status(find("o-1006").result.error()).message
                   == "unknown product SKU-SOFA",
        "panic is 500, timeout 504, and the public_message detail is shown");

  // -- 8. fail fast, for contrast ---------------------------------------------------
  heading("8. Fail fast instead (errgroup.WithContext)");
  {
    // First error wins: the run stops, later rows are never tried and their
    // failures never seen. Right when one failure invalidates the whole.
    pricing_service fresh;
    keel::error first;
    std::size_t tried = 0;
    for (auto row : batch_rows) {
      ++tried;
      if (auto out = process_row(row, fresh); !out.result) {
        first = out.result.error();
        break;
      }
    }
    field("first error wins", keel::to_string(first));
    field("rows tried / never tried",
          std::to_string(tried) + " / " + std::to_string(std::size(batch_rows) - tried));
    check(tried == 2 && keel::is(first, order_errc::malformed_row), "fail-fast stops at o-1002");
  }
  {
    // Hybrid: a panic (a bug) stops the run; per-row errors keep aggregating.
    pricing_service fresh;
    keel::error_buffer per_row{16};
    keel::error critical;
    std::size_t tried = 0;
    for (auto row : batch_rows) {
      ++tried;
      auto out = process_row(row, fresh);
      if (!out.result && keel::is_panic(out.result.error())) {
        critical = out.result.error();
        break;
      }
      per_row.add(out.result.error()); // ignores the empty error of a good row
    }
    field("hybrid: stopped by", keel::to_string(critical));
    field("hybrid: rows tried / errors",
          std::to_string(tried) + " / " + std::to_string(per_row.total()) + " per-row kept");
    check(tried == 8 && per_row.total() == 3, "hybrid stops at the panic with 3 row errors");
  }

  // -- summary --------------------------------------------------------------------
  heading("Summary");
  auto retried_ok = std::count_if(outcomes.begin(), outcomes.end(), [](const row_outcome& o) {
    return o.result.has_value() && !o.retried.empty();
  });
  field("rows", std::to_string(outcomes.size()) + " (" + std::to_string(ok_rows) + " ok, "
                    + std::to_string(failed_rows) + " failed, " + std::to_string(retried_ok)
                    + " retried to success)");
  field("failures", summary.to_string());
  field("checks", std::to_string(check.total() - check.failed()) + " of "
                      + std::to_string(check.total()) + " passed");
  if (check.failed() > 0) {
    std::cerr << "error_model: " << check.failed() << " check(s) failed\n";
    return 1;
  }
  return 0;
}
