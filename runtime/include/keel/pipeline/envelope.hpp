#pragma once

/// \file
/// What travels between pipeline stages: items in envelopes, in batches.
///
/// Every item has an `envelope`: its id, the id of the source item it came
/// from, the attempt at the current stage, and a W3C trace context that
/// stages propagate. Stages exchange `batch<T>`s (a structure of arrays: item
/// keys and values), so the per-message cost of the actor system is paid once
/// per batch, not once per item; what all items of a batch share (attempt,
/// trace id) is stored once, and span ids are derived, not stored.

#include "keel/error/expected.hpp"

#include <any>
#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace keel {

/// W3C trace context (https://www.w3.org/TR/trace-context/): a 16-byte trace
/// id, the 8-byte id of the current span, its parent span and the flags.
/// An all-zero trace id means "no trace".
///
/// Span ids are kept as integers (their big-endian bytes are the W3C span id),
/// so that giving an item a new span at every stage costs two stores.
struct trace_context {
  std::array<uint8_t, 16> trace_id{};
  uint64_t span_id = 0;
  uint64_t parent_span_id = 0;
  /// Bit 0 is "sampled".
  uint8_t flags = 0;

  /// Whether the trace id is set (not all zero).
  bool valid() const noexcept;

  /// The `traceparent` header: "00-<trace id>-<span id>-<flags>", lowercase hex.
  std::string traceparent() const;

  /// Parses a `traceparent` header; an error names what is wrong with it.
  static expected<trace_context> parse(std::string_view traceparent);

  /// The context of a child span: same trace, `span` as span id, this span as parent.
  trace_context child(uint64_t span) const noexcept {
    trace_context t = *this;
    t.parent_span_id = span_id;
    t.span_id = span;
    return t;
  }

  friend bool operator==(const trace_context&, const trace_context&) = default;
};

/// The envelope of one item, as a stage function sees it
/// (`item_context::item()`).
struct envelope {
  /// Unique within a run. Source items are numbered 0, 1, 2... in input order;
  /// items made by a stage (flat-map children, groups) get ids with the top bit
  /// set and the making stage's number (1 = first stage) in bits 56..62.
  uint64_t id = 0;
  /// Input position of the source item this item derives from (orders results).
  uint64_t origin = 0;
  /// 1 for the first attempt at the current stage.
  uint32_t attempt = 1;
  /// The item's span at the current stage; its parent is the item's span at
  /// the previous stage (for an item made by the previous stage: the span of
  /// its source item there).
  trace_context trace;
};

/// The span id of item `id` at stage `stage` (0 = the source, 1 = the first
/// stage, ...) in a run salted with `salt`: derived, not stored, so that an
/// item's trace context costs nothing per stage. Distinct within a run in
/// practice (a multiplicative hash of the id, the stage in the top byte).
constexpr uint64_t span_id_of(uint64_t salt, uint64_t id, uint32_t stage) noexcept {
  return (salt ^ (id * 0x9e3779b97f4a7c15ULL) ^ (uint64_t{stage} << 56)) | 1;
}

/// What a batch stores per item: its id and origin (16 bytes). The attempt
/// and the trace id belong to the batch (retried items travel alone); span
/// ids are derived with `span_id_of`.
struct item_key {
  uint64_t id = 0;
  uint64_t origin = 0;
};

/// Type-erased batch of items, the unit that moves between stage actors.
///
/// The fields below the interface belong to the runtime: they record how far
/// a worker got, so that a stage restarted in the middle of a batch resumes
/// after the item that crashed it instead of redoing (or losing) the rest.
class batch_base {
public:
  virtual ~batch_base() = default;

  /// Number of items.
  size_t size() const noexcept { return keys.size(); }

  /// The key of item `i`.
  item_key& key(size_t i) noexcept { return keys[i]; }
  const item_key& key(size_t i) const noexcept { return keys[i]; }

  /// An empty batch of the same item type with room for `n` items.
  virtual std::unique_ptr<batch_base> make_empty(size_t n) const = 0;

  /// Moves item `i` of `from` (same item type) to the end of this batch.
  virtual void append_from(batch_base& from, size_t i) = 0;

  /// A copy of item `i`'s value (for dead letters and failure reports).
  virtual std::any value_of(size_t i) const = 0;

  /// Removes every item.
  virtual void clear() noexcept = 0;

  /// The items' keys, one per item (in the base, so that the runtime reads
  /// and stamps them without knowing the item type).
  std::vector<item_key> keys;

  // -- shared by the batch's items ----------------------------------------------

  /// The attempt at the current stage (1, or more for a retried item).
  uint32_t attempt = 1;
  /// Trace id and flags of the items; `span_id` is the run's root span.
  trace_context trace;

  // -- runtime bookkeeping ------------------------------------------------------

  /// Position in the run's order (assigned by the source, kept 1:1 by stages).
  uint64_t seq = 0;
  /// False for batches outside the order (retries).
  bool ordered = true;
  /// Next item to process at the current stage.
  size_t cursor = 0;
  /// Outputs made so far from this batch at the current stage.
  std::unique_ptr<batch_base> partial;
  /// A retried item: when it first failed at the current stage (its retry
  /// policy's `max_elapsed` counts from there) and the delay before this
  /// attempt (decorrelated jitter grows from it).
  std::chrono::steady_clock::time_point first_failure{};
  std::chrono::nanoseconds retry_delay{0};
};

/// A batch of items of type `T`.
template <class T>
class batch final : public batch_base {
public:
  batch() = default;

  explicit batch(size_t n) {
    keys.reserve(n);
    values.reserve(n);
  }

  std::unique_ptr<batch_base> make_empty(size_t n) const override {
    return std::make_unique<batch<T>>(n);
  }

  void append_from(batch_base& from, size_t i) override {
    auto& src = static_cast<batch<T>&>(from);
    push(src.keys[i], std::move(src.values[i]));
  }

  std::any value_of(size_t i) const override {
    if constexpr (std::is_copy_constructible_v<T>)
      return std::any{values[i]};
    else
      return {};
  }

  void clear() noexcept override {
    keys.clear();
    values.clear();
  }

  /// Appends an item.
  void push(const item_key& k, T value) {
    keys.push_back(k);
    values.push_back(std::move(value));
  }

  std::vector<T> values;
};

} // namespace keel
