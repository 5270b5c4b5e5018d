#pragma once

/// \file
/// A pipeline run's dead letters into a persistent dead-letter queue
/// (keel/resilience/dlq.hpp), so that they outlive the process and can be
/// replayed later.
///
/// A dead item holds its value as `std::any` (of the type the stage received);
/// a `dead_letter_codec` knows, per type, how to write it as JSON and which
/// key it has. A type it does not know, or a `to_json` that throws, still
/// gives an entry: its payload is a note saying why the payload could not be
/// written (`{"unserializable": "..."}`), never a lost entry.
///
///     keel::dead_letter_codec codec;
///     codec.add<order>()                                  // boost::json::value_from
///          .add<row>([](const row& r) { return r.raw; },  // JSON text of your own
///                    [](const row& r) { return r.id; });   // the key
///     keel::dead_letter_queue dlq{journal, "import"};
///
///     // As they happen (durable even if the process dies mid-run) ...
///     auto writer = std::make_shared<keel::dead_letter_writer>(dlq, codec);
///     cfg.on_dead_letter = writer->callback();
///     auto result = pipeline.run(sys, cfg);
///     if (auto err = writer->error()) ...
///     // ... or after the run, from the report.
///     auto n = keel::persist_dead_letters(result, dlq, codec);
///
/// Each entry: `source` = the stage, `key` = the codec's key for the type
/// (default: the item's origin, i.e. its position in the source), `attempts`
/// = the attempts at that stage, `first_seen` = `last_seen` = when it was
/// dead-lettered, `failure` = its error (with its stage attribution).

#include "keel/pipeline/result.hpp"
#include "keel/resilience/dlq.hpp"

#include <boost/json/serialize.hpp>
#include <boost/json/value_from.hpp>

#include <any>
#include <concepts>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <typeindex>
#include <utility>
#include <vector>

namespace keel {

/// Whether Boost.JSON can convert a `T` with `boost::json::value_from`.
template <class T>
concept json_convertible = requires(const T& x) {
  boost::json::value_from(x);
};

/// Turns dead items into dead-letter entries; see the file overview.
class dead_letter_codec {
public:
  /// The JSON text of an item held by a `std::any`.
  using to_json_fn = std::function<std::string(const std::any&)>;
  /// The key of an item held by a `std::any`.
  using key_fn = std::function<std::string(const std::any&)>;

  /// Writes `T` with `boost::json::value_from`; keys by origin.
  template <json_convertible T>
  dead_letter_codec& add() {
    return add<T>([](const T& x) { return boost::json::serialize(boost::json::value_from(x)); });
  }

  /// Writes `T` with `to_json` (returning JSON text as `std::string`, or
  /// anything convertible to `boost::json::value`); keys with `key` (by
  /// origin when null).
  template <class T, class ToJson>
  dead_letter_codec& add(ToJson to_json, std::function<std::string(const T&)> key = {}) {
    type_entry e;
    e.to_json = [f = std::move(to_json)](const std::any& a) -> std::string {
      const auto& x = std::any_cast<const T&>(a);
      using R = std::decay_t<std::invoke_result_t<const ToJson&, const T&>>;
      if constexpr (std::is_same_v<R, std::string>)
        return f(x);
      else
        return boost::json::serialize(boost::json::value(f(x)));
    };
    if (key)
      e.key = [k = std::move(key)](const std::any& a) { return k(std::any_cast<const T&>(a)); };
    types_[std::type_index(typeid(T))] = std::move(e);
    return *this;
  }

  /// The entry for `d` (never fails; see the file overview).
  store::dlq_entry encode(const dead_item& d) const;

private:
  struct type_entry {
    to_json_fn to_json;
    key_fn key;
  };

  std::map<std::type_index, type_entry> types_;
};

/// Writes dead items into a queue as they happen: install `callback()` as
/// `run_config::on_dead_letter` (make the writer with `std::make_shared`: the
/// callback shares it). Thread-safe (workers call it concurrently). Use it or
/// `persist_dead_letters`, not both: each writes every dead item.
/// A failed write cannot fail the item (it is already dead-lettered in the
/// report): it is kept in `error()` and the item stays in the report's
/// `dead_letters`.
class dead_letter_writer : public std::enable_shared_from_this<dead_letter_writer> {
public:
  dead_letter_writer(dead_letter_queue dlq, dead_letter_codec codec)
      : dlq_(std::move(dlq)), codec_(std::move(codec)) {}

  /// Writes one dead item.
  void write(const dead_item& d);

  /// A callback for `run_config::on_dead_letter`, sharing this writer.
  std::function<void(const dead_item&)> callback() {
    return [self = shared_from_this()](const dead_item& d) { self->write(d); };
  }

  /// Entries written.
  size_t written() const;

  /// The write failures, joined (empty when none).
  keel::error error() const;

private:
  dead_letter_queue dlq_;
  dead_letter_codec codec_;
  mutable std::mutex mtx_;
  size_t written_ = 0;
  std::vector<keel::error> errors_;
};

/// Writes the report's dead letters into `dlq`, in one batch (all or none);
/// returns how many.
expected<size_t> persist_dead_letters(const run_report& report, dead_letter_queue& dlq,
                                      const dead_letter_codec& codec);

} // namespace keel
