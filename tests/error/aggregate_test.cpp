#include "keel/error/aggregate.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "keel/testing/matchers.hpp"

namespace {

enum class shop_errc : uint8_t { connection_lost = 1, constraint = 2 };

} // namespace

template <>
struct keel::error_code_enum<shop_errc> {
  static constexpr std::string_view category = "test.shop";

  static std::string_view name(shop_errc e) noexcept {
    return e == shop_errc::connection_lost ? "connection_lost" : "constraint";
  }

  static keel::code canonical(shop_errc e) noexcept {
    return e == shop_errc::connection_lost ? keel::code::unavailable
                                           : keel::code::failed_precondition;
  }
};

namespace {

using keel::code;
using keel::testing::FailedWith;
using keel::testing::IsOk;
using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::Pair;
using ::testing::UnorderedElementsAre;

/// Errors whose messages are their index, so a test can tell which survived.
std::vector<keel::error> numbered(std::size_t n, code c = code::unavailable) {
  std::vector<keel::error> result;
  result.reserve(n);
  for (std::size_t i = 0; i < n; ++i)
    result.push_back(keel::make_error(c, std::to_string(i)));
  return result;
}

/// The index a `numbered` error carries.
int number_of(const keel::error& err) {
  int n = -1;
  auto text = err.message();
  std::from_chars(text.data(), text.data() + text.size(), n);
  return n;
}

std::vector<int> numbers_of(const std::vector<keel::error>& errs) {
  std::vector<int> result;
  for (const auto& e : errs)
    result.push_back(number_of(e));
  return result;
}

// -- error_buffer ---------------------------------------------------------------

TEST(ErrorBuffer, EmptyResultIsOk) {
  keel::error_buffer buf{4};
  EXPECT_THAT(buf.result(), IsOk());
  EXPECT_EQ(buf.total(), 0u);
  EXPECT_EQ(buf.overflow(), 0u);
  EXPECT_THAT(buf.errors(), IsEmpty());
  EXPECT_EQ(buf.capacity(), 4u);
}

TEST(ErrorBuffer, KeepsFirstNAndCountsOverflow) {
  keel::error_buffer buf{3};
  for (auto& e : numbered(5))
    buf.add(e);
  EXPECT_THAT(numbers_of(buf.errors()), ElementsAre(0, 1, 2));
  EXPECT_EQ(buf.total(), 5u);
  EXPECT_EQ(buf.overflow(), 2u);
}

TEST(ErrorBuffer, KeepsTheAddedNodes) {
  // Keeping a copy, not a rebuilt error, preserves identity for `is(err, sentinel)`.
  auto errs = numbered(2);
  keel::error_buffer buf{2};
  buf.add(errs[0]);
  buf.add(errs[1]);
  auto kept = buf.errors();
  ASSERT_EQ(kept.size(), 2u);
  EXPECT_TRUE(kept[0].same_node(errs[0]));
  EXPECT_TRUE(kept[1].same_node(errs[1]));
}

TEST(ErrorBuffer, ResultAppendsMoreErrorsChild) {
  keel::error_buffer buf{3};
  for (auto& e : numbered(10, code::invalid_argument))
    buf.add(e);
  auto result = buf.result();
  EXPECT_THAT(result, FailedWith(code::invalid_argument));
  EXPECT_THAT(result, FailedWith(code::resource_exhausted));
  ASSERT_TRUE(result.is_join());
  auto kids = result.children();
  ASSERT_EQ(kids.size(), 4u);
  EXPECT_EQ(number_of(kids[0]), 0);
  EXPECT_EQ(number_of(kids[2]), 2);
  EXPECT_EQ(kids[3].code(), code::resource_exhausted);
  EXPECT_EQ(kids[3].message(), "(7 more errors)");
}

TEST(ErrorBuffer, ResultWithoutOverflowJoinsKeptOnly) {
  keel::error_buffer buf{5};
  for (auto& e : numbered(2, code::not_found))
    buf.add(e);
  auto result = buf.result();
  ASSERT_TRUE(result.is_join());
  EXPECT_EQ(result.children().size(), 2u);
  EXPECT_THAT(result, FailedWith(code::not_found));
  EXPECT_THAT(result, ::testing::Not(FailedWith(code::resource_exhausted)));
}

TEST(ErrorBuffer, SingleKeptErrorIsTheResult) {
  auto err = keel::not_found_error("x");
  keel::error_buffer buf{5};
  buf.add(err);
  EXPECT_TRUE(buf.result().same_node(err));
}

TEST(ErrorBuffer, CapacityZeroOverflowsEverything) {
  keel::error_buffer buf{0};
  for (auto& e : numbered(3))
    buf.add(e);
  EXPECT_THAT(buf.errors(), IsEmpty());
  EXPECT_EQ(buf.total(), 3u);
  EXPECT_EQ(buf.overflow(), 3u);
  auto result = buf.result();
  EXPECT_FALSE(result.is_join());
  EXPECT_EQ(result.code(), code::resource_exhausted);
  EXPECT_EQ(result.message(), "(3 more errors)");
}

TEST(ErrorBuffer, IgnoresEmptyErrors) {
  keel::error_buffer buf{2};
  buf.add({});
  buf.add(keel::wrap({}, "nothing"));
  EXPECT_EQ(buf.total(), 0u);
  EXPECT_THAT(buf.result(), IsOk());
  buf.add(keel::internal_error("x"));
  buf.add({});
  EXPECT_EQ(buf.total(), 1u);
  EXPECT_EQ(buf.errors().size(), 1u);
}

// -- default_error_class --------------------------------------------------------

TEST(DefaultErrorClass, ClassifiesEveryCanonicalCode) {
  const std::vector<std::pair<code, std::string>> expected = {
      {code::cancelled, "cancelled"},
      {code::unknown, "internal"},
      {code::invalid_argument, "validation"},
      {code::deadline_exceeded, "transient"},
      {code::not_found, "not_found"},
      {code::already_exists, "conflict"},
      {code::permission_denied, "auth"},
      {code::resource_exhausted, "transient"},
      {code::failed_precondition, "validation"},
      {code::aborted, "transient"},
      {code::out_of_range, "validation"},
      {code::unimplemented, "internal"},
      {code::internal, "internal"},
      {code::unavailable, "transient"},
      {code::data_loss, "internal"},
      {code::unauthenticated, "auth"},
      {code::panic, "panic"},
  };
  ASSERT_EQ(expected.size(), keel::max_canonical_code) << "a canonical code lacks a class";
  for (const auto& [c, cls] : expected)
    EXPECT_EQ(keel::default_error_class(keel::make_error(c, "x")), cls) << keel::to_string(c);
}

TEST(DefaultErrorClass, PrefixesApplicationCategories) {
  EXPECT_EQ(keel::default_error_class(keel::make_error(shop_errc::connection_lost, "x")),
            "test.shop.transient");
  EXPECT_EQ(keel::default_error_class(keel::make_error(shop_errc::constraint, "x")),
            "test.shop.validation");
}

TEST(DefaultErrorClass, PrefixesCategoriesOnlyAPeerKnows) {
  auto err = keel::error_builder{"peer.billing", 7, "card_declined", code::failed_precondition}
                 .message("x")
                 .build();
  EXPECT_EQ(keel::default_error_class(err), "peer.billing.validation");
}

// -- error_summary --------------------------------------------------------------

TEST(ErrorSummary, EmptySaysNoErrors) {
  keel::error_summary summary;
  EXPECT_EQ(summary.to_string(), "no errors");
  EXPECT_EQ(summary.total(), 0u);
  EXPECT_THAT(summary.counts(), IsEmpty());
}

TEST(ErrorSummary, IgnoresEmptyErrors) {
  keel::error_summary summary;
  summary.add({});
  EXPECT_EQ(summary.total(), 0u);
  EXPECT_EQ(summary.to_string(), "no errors");
}

TEST(ErrorSummary, CountsJoinsLeafByLeaf) {
  keel::error_summary summary;
  summary.add(keel::join(keel::unavailable_error("a"), keel::invalid_argument_error("b"),
                         keel::wrap(keel::deadline_exceeded_error("c"), "stage fetch")));
  summary.add(
      keel::wrap(keel::join(keel::not_found_error("d"), keel::out_of_range_error("e")), "batch 2"));
  EXPECT_EQ(summary.total(), 5u);
  EXPECT_THAT(summary.counts(), UnorderedElementsAre(Pair("transient", 2u), Pair("validation", 2u),
                                                     Pair("not_found", 1u)));
}

TEST(ErrorSummary, PrefixesApplicationCategories) {
  keel::error_summary summary;
  summary.add(keel::make_error(shop_errc::connection_lost, "db down"));
  summary.add(keel::unavailable_error("cache down"));
  EXPECT_THAT(summary.counts(),
              UnorderedElementsAre(Pair("test.shop.transient", 1u), Pair("transient", 1u)));
}

TEST(ErrorSummary, UsesCustomClassifier) {
  keel::error_summary summary{[](const keel::error& leaf) { return leaf.code_name(); }};
  summary.add(keel::join(keel::unavailable_error("a"), keel::aborted_error("b")));
  summary.add(keel::unavailable_error("c"));
  EXPECT_THAT(summary.counts(), UnorderedElementsAre(Pair("unavailable", 2u), Pair("aborted", 1u)));
  EXPECT_EQ(summary.to_string(), "unavailable: 2, aborted: 1");
}

TEST(ErrorSummary, ToStringOrdersByDescendingCount) {
  keel::error_summary summary;
  for (int i = 0; i < 3; ++i)
    summary.add(keel::invalid_argument_error("v"));
  for (int i = 0; i < 12; ++i)
    summary.add(keel::unavailable_error("t"));
  EXPECT_EQ(summary.to_string(), "transient: 12, validation: 3");
}

TEST(ErrorSummary, ToStringBreaksTiesByName) {
  keel::error_summary summary;
  // Added in anti-alphabetical order so that insertion order cannot pass for name order.
  summary.add(keel::panic_error("p"));
  summary.add(keel::not_found_error("n"));
  summary.add(keel::not_found_error("n"));
  summary.add(keel::cancelled_error("c"));
  summary.add(keel::permission_denied_error("a"));
  summary.add(keel::permission_denied_error("a"));
  EXPECT_EQ(summary.to_string(), "auth: 2, not_found: 2, cancelled: 1, panic: 1");
}

// -- error_sample ---------------------------------------------------------------

TEST(ErrorSample, RespectsCapacity) {
  keel::error_sample sample{5, 42};
  for (auto& e : numbered(100))
    sample.add(e);
  EXPECT_EQ(sample.seen(), 100u);
  auto kept = numbers_of(sample.sample());
  ASSERT_EQ(kept.size(), 5u);
  std::sort(kept.begin(), kept.end());
  EXPECT_EQ(std::adjacent_find(kept.begin(), kept.end()), kept.end()) << "duplicates";
  EXPECT_GE(kept.front(), 0);
  EXPECT_LT(kept.back(), 100);
}

TEST(ErrorSample, FewerThanCapacityKeepsAllInOrder) {
  keel::error_sample sample{10, 42};
  for (auto& e : numbered(4))
    sample.add(e);
  EXPECT_EQ(sample.seen(), 4u);
  EXPECT_THAT(numbers_of(sample.sample()), ElementsAre(0, 1, 2, 3));
}

TEST(ErrorSample, IgnoresEmptyErrors) {
  keel::error_sample sample{2, 42};
  sample.add({});
  sample.add(keel::internal_error("x"));
  sample.add({});
  EXPECT_EQ(sample.seen(), 1u);
  EXPECT_EQ(sample.sample().size(), 1u);
}

TEST(ErrorSample, CapacityZeroKeepsNothing) {
  keel::error_sample sample{0, 42};
  for (auto& e : numbered(10))
    sample.add(e);
  EXPECT_EQ(sample.seen(), 10u);
  EXPECT_THAT(sample.sample(), IsEmpty());
}

std::vector<int> sample_numbers(std::uint64_t seed, const std::vector<keel::error>& errs,
                                std::size_t capacity) {
  keel::error_sample sample{capacity, seed};
  for (const auto& e : errs)
    sample.add(e);
  return numbers_of(sample.sample());
}

TEST(ErrorSample, SameSeedGivesSameSample) {
  auto errs = numbered(1000);
  EXPECT_EQ(sample_numbers(7, errs, 10), sample_numbers(7, errs, 10));
}

TEST(ErrorSample, DifferentSeedsGiveDifferentSamples) {
  // Two seeds agreeing on all 10 of 1000 positions would be a ~1e-23 event.
  auto errs = numbered(1000);
  EXPECT_NE(sample_numbers(7, errs, 10), sample_numbers(8, errs, 10));
}

TEST(ErrorSample, SelectsUniformly) {
  // Each of n errors must land in a size-k sample with probability k/n,
  // whatever its position. Over `runs` independent seeds each count c_i has
  // mean runs*k/n and, as every run draws k distinct errors, variance
  // runs*(k/n)*(1-k/n)*n/(n-1) after accounting for the fixed total; the
  // sum of (c_i - mean)^2 / variance is then chi-square with n-1 = 99 degrees
  // of freedom, whose 1 - 1e-6 quantile is about 181. Deterministic by
  // default; set KEEL_TEST_SEED to try other seeds.
  constexpr int n = 100;
  constexpr std::size_t k = 10;
  constexpr int runs = 20000;
  std::uint64_t base_seed = 0x6b65656c; // "keel"
  if (const char* env = std::getenv("KEEL_TEST_SEED"))
    base_seed = std::strtoull(env, nullptr, 0);
  std::cout << "[ seed     ] KEEL_TEST_SEED=" << base_seed << '\n';
  SCOPED_TRACE("KEEL_TEST_SEED=" + std::to_string(base_seed));

  auto errs = numbered(n);
  std::vector<int> counts(n, 0);
  for (int run = 0; run < runs; ++run) {
    keel::error_sample sample{k, base_seed + static_cast<std::uint64_t>(run)};
    for (const auto& e : errs)
      sample.add(e);
    for (const auto& e : sample.sample())
      ++counts[number_of(e)];
  }

  const double p = static_cast<double>(k) / n;
  const double mean = runs * p;                               // 2000
  const double variance = runs * p * (1 - p) * n / (n - 1.0); // ~1818
  double chi2 = 0;
  for (int i = 0; i < n; ++i) {
    chi2 += (counts[i] - mean) * (counts[i] - mean) / variance;
    // Six standard deviations of the marginal count: a correct sampler
    // leaves this band with probability ~2e-9 per error.
    EXPECT_NEAR(counts[i], mean, 6 * std::sqrt(runs * p * (1 - p))) << "error " << i;
  }
  EXPECT_LT(chi2, 181.0);
}

} // namespace

TEST(ErrorSummary, CountsAWrapChainAsOneFailureClassifiedAtItsTop) {
  keel::error_summary summary;
  // A locked database (aborted: "transient") reported by a boundary that
  // reclassified it as invalid input counts as validation, once.
  auto locked = keel::aborted_error("database is locked");
  summary.add(keel::wrap(keel::wrap(locked, keel::code::invalid_argument, "bad batch"), "import"));
  // A wrap over a join yields the join's failures.
  summary.add(keel::wrap(keel::join(keel::unavailable_error("a"), keel::not_found_error("b")),
                         "stage store"));
  EXPECT_EQ(summary.total(), 3u);
  EXPECT_EQ(summary.to_string(), "not_found: 1, transient: 1, validation: 1");
}
