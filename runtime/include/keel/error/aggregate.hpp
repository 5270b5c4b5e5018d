/// @file
/// Aggregating many errors: a capped buffer, a per-class summary and a
/// reservoir sample, all safe to use from many threads.
///
/// A batch of a million items can fail a million times; holding every error
/// costs memory, and printing them all helps nobody. Pick by need:
///  - `error_buffer`: keeps the first N errors, counts the rest; `result()`
///    joins what it kept plus a "(N more errors)" error.
///  - `error_summary`: counts by class ("transient: 12, validation: 3") so
///    that no failure mode hides behind another (the seed's "lost error").
///  - `error_sample`: a uniform random sample of N errors out of all of them
///    (reservoir sampling, seeded, so runs are reproducible).
///
/// @code
///   keel::error_buffer buf{100};
///   keel::error_summary summary;
///   for (auto& item : items)
///     if (auto err = process(item)) {
///       buf.add(err);
///       summary.add(err);
///     }
///   std::cout << summary.to_string() << '\n';  // transient: 12, validation: 3
///   return buf.result();
/// @endcode
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "keel/error/error.hpp"

namespace keel {

/// Keeps the first `capacity` errors added, counts the others. `add` is
/// lock-free (one atomic increment, and a copy while there is room), so many
/// threads can report failures without contending on a mutex.
class error_buffer {
public:
  /// A buffer that keeps at most `capacity` errors.
  explicit error_buffer(std::size_t capacity);

  error_buffer(const error_buffer&) = delete;
  error_buffer& operator=(const error_buffer&) = delete;

  /// Adds `err`; empty errors are ignored. Thread-safe.
  void add(error err);

  /// The errors added so far, including the ones not kept. Thread-safe.
  std::size_t total() const noexcept;

  /// The number of errors added but not kept. Thread-safe.
  std::size_t overflow() const noexcept;

  /// The maximum number kept.
  std::size_t capacity() const noexcept { return capacity_; }

  /// The kept errors, in the order their `add` calls claimed their slots.
  /// Errors whose `add` is still running concurrently are not included.
  std::vector<error> errors() const;

  /// The join of the kept errors plus, when some were dropped, a
  /// `resource_exhausted` error "(N more errors)". Empty when none was added.
  /// Like any join it flattens kept joins, so it may hold more children
  /// than `errors()` has entries.
  error result() const;

private:
  struct slot {
    error value;
    std::atomic<bool> ready{false};
  };

  std::size_t capacity_;
  std::unique_ptr<slot[]> slots_;
  std::atomic<std::size_t> next_{0};
};

/// A class label for an error, e.g. "transient".
using error_classifier = std::function<std::string(const error&)>;

/// The default classes, by the canonical code of a failure (see `failures`): "transient"
/// (unavailable, deadline_exceeded, resource_exhausted, aborted),
/// "validation" (invalid_argument, out_of_range, failed_precondition),
/// "not_found", "conflict" (already_exists), "auth" (permission_denied,
/// unauthenticated), "cancelled", "panic", "internal" (internal, data_loss,
/// unknown, unimplemented); an application category's name prefixes the class
/// of its codes ("shop.db.transient").
std::string default_error_class(const error& failure);

/// Counts errors by class, failure by failure (`keel::failures`): a joined
/// batch error counts each item, and a failure reclassified at a boundary
/// (`wrap(err, code::unavailable, ...)`) counts under its new class. Thread-safe.
class error_summary {
public:
  /// Uses `default_error_class`.
  error_summary();

  /// Uses `classify` on each failure.
  explicit error_summary(error_classifier classify);

  /// Counts the failures of `err`; empty errors are ignored.
  void add(const error& err);

  /// The count per class.
  std::map<std::string, std::uint64_t> counts() const;

  /// The number of failures counted.
  std::uint64_t total() const;

  /// "transient: 12, validation: 3": classes by descending count, ties by
  /// name; "no errors" when nothing was counted.
  std::string to_string() const;

private:
  error_classifier classify_;
  mutable std::mutex mtx_;
  std::map<std::string, std::uint64_t> counts_;
  std::uint64_t total_ = 0;
};

/// A uniform random sample of at most `capacity` errors out of all added
/// (Vitter's algorithm R). Seeded: the same errors added in the same order
/// give the same sample (with several writers the order, and so the sample,
/// depends on scheduling). Thread-safe.
class error_sample {
public:
  error_sample(std::size_t capacity, std::uint64_t seed);

  /// Offers `err` to the sample; empty errors are ignored.
  void add(error err);

  /// The number of errors offered so far.
  std::uint64_t seen() const;

  /// The current sample.
  std::vector<error> sample() const;

private:
  std::size_t capacity_;
  mutable std::mutex mtx_;
  std::mt19937_64 rng_;
  std::uint64_t seen_ = 0;
  std::vector<error> sample_;
};

} // namespace keel
