#include "keel/error/aggregate.hpp"

#include <algorithm>
#include <limits>
#include <utility>

namespace keel {

// -- error_buffer ---------------------------------------------------------------

error_buffer::error_buffer(std::size_t capacity)
    : capacity_(capacity), slots_(std::make_unique<slot[]>(capacity)) {}

void error_buffer::add(error err) {
  if (!err)
    return;
  // The increment alone makes the index unique; the slot's contents are
  // published by its `ready` flag, so no ordering is needed here.
  auto index = next_.fetch_add(1, std::memory_order_relaxed);
  if (index >= capacity_)
    return;
  auto& s = slots_[index];
  s.value = std::move(err);
  s.ready.store(true, std::memory_order_release);
}

std::size_t error_buffer::total() const noexcept {
  return next_.load(std::memory_order_acquire);
}

std::size_t error_buffer::overflow() const noexcept {
  auto n = total();
  return n > capacity_ ? n - capacity_ : 0;
}

std::vector<error> error_buffer::errors() const {
  auto n = std::min(total(), capacity_);
  std::vector<error> result;
  result.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    // A claimed slot whose writer has not finished yet is skipped rather than
    // waited for: readers must never block the writers' lock-free path.
    if (slots_[i].ready.load(std::memory_order_acquire))
      result.push_back(slots_[i].value);
  }
  return result;
}

error error_buffer::result() const {
  auto kept = errors();
  // Read after `errors()`: an index is either below the capacity (a slot) or
  // above it (overflow), so a later count can add overflow but never count an
  // error twice.
  if (auto dropped = overflow(); dropped > 0)
    kept.push_back(resource_exhausted_error("(" + std::to_string(dropped)
                                            + (dropped == 1 ? " more error)" : " more errors)")));
  return join(std::move(kept));
}

// -- default_error_class --------------------------------------------------------

namespace {

std::string_view class_of(code c) noexcept {
  switch (c) {
    case code::unavailable:
    case code::deadline_exceeded:
    case code::resource_exhausted:
    case code::aborted:
      return "transient";
    case code::invalid_argument:
    case code::out_of_range:
    case code::failed_precondition:
      return "validation";
    case code::not_found:
      return "not_found";
    case code::already_exists:
      return "conflict";
    case code::permission_denied:
    case code::unauthenticated:
      return "auth";
    case code::cancelled:
      return "cancelled";
    case code::panic:
      return "panic";
    case code::internal:
    case code::data_loss:
    case code::unknown:
    case code::unimplemented:
      return "internal";
    case code::ok:
      break;
  }
  // A non-empty error claiming `ok` (or an out-of-range value from a peer)
  // is a bug somewhere, so it belongs with the bugs.
  return "internal";
}

} // namespace

std::string default_error_class(const error& failure) {
  auto cls = class_of(failure.code());
  auto category = failure.category();
  if (category.empty() || category == canonical_category_name)
    return std::string{cls};
  std::string result;
  result.reserve(category.size() + 1 + cls.size());
  result += category;
  result += '.';
  result += cls;
  return result;
}

// -- error_summary --------------------------------------------------------------

error_summary::error_summary() : classify_(default_error_class) {}

error_summary::error_summary(error_classifier classify) : classify_(std::move(classify)) {
  // An empty std::function would throw on the first failure, far from the
  // mistake; counting by the default classes is the useful reading.
  if (!classify_)
    classify_ = default_error_class;
}

void error_summary::add(const error& err) {
  if (!err)
    return;
  // Classify outside the lock: the classifier is user code, may be slow, and
  // must not deadlock if it reports to this summary itself.
  std::vector<std::string> classes;
  for (const auto& failure : failures(err))
    classes.push_back(classify_(failure));
  std::lock_guard<std::mutex> guard{mtx_};
  for (auto& cls : classes)
    ++counts_[std::move(cls)];
  total_ += classes.size();
}

std::map<std::string, std::uint64_t> error_summary::counts() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return counts_;
}

std::uint64_t error_summary::total() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return total_;
}

std::string error_summary::to_string() const {
  auto snapshot = counts();
  if (snapshot.empty())
    return "no errors";
  std::vector<std::pair<std::string, std::uint64_t>> items(snapshot.begin(), snapshot.end());
  // The map is ordered by name already, so a stable sort by count keeps ties
  // in name order.
  std::stable_sort(items.begin(), items.end(),
                   [](const auto& x, const auto& y) { return x.second > y.second; });
  std::string result;
  for (const auto& [cls, n] : items) {
    if (!result.empty())
      result += ", ";
    result += cls;
    result += ": ";
    result += std::to_string(n);
  }
  return result;
}

// -- error_sample ---------------------------------------------------------------

namespace {

/// A uniform draw from [0, bound). Not std::uniform_int_distribution: its
/// algorithm differs between standard libraries, and a seeded sample should be
/// the same wherever it is replayed (std::mt19937_64's output is specified).
/// Rejecting the lowest 2^64 mod bound outputs leaves a range that is a
/// multiple of `bound`, so the remainder is unbiased.
std::uint64_t uniform_below(std::mt19937_64& rng, std::uint64_t bound) {
  static_assert(std::mt19937_64::min() == 0
                && std::mt19937_64::max() == std::numeric_limits<std::uint64_t>::max());
  auto threshold = (std::uint64_t{0} - bound) % bound; // 2^64 mod bound
  for (;;) {
    auto x = rng();
    if (x >= threshold)
      return x % bound;
  }
}

} // namespace

error_sample::error_sample(std::size_t capacity, std::uint64_t seed)
    : capacity_(capacity), rng_(seed) {}

void error_sample::add(error err) {
  if (!err)
    return;
  std::lock_guard<std::mutex> guard{mtx_};
  ++seen_;
  if (sample_.size() < capacity_) {
    sample_.push_back(std::move(err));
    return;
  }
  // Algorithm R: the n-th error replaces a random member with probability
  // capacity / n, which keeps every error seen so far equally likely to be in
  // the sample.
  auto j = uniform_below(rng_, seen_);
  if (j < capacity_)
    std::swap(sample_[j], err); // `err` outlives the guard: no teardown under the lock
}

std::uint64_t error_sample::seen() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return seen_;
}

std::vector<error> error_sample::sample() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return sample_;
}

} // namespace keel
