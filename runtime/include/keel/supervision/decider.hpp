#pragma once

/// @file
/// What a supervisor does about a failure: `directive` and `decider`.
///
/// A decider maps a child's failure (a keel::error; an exception escaping a
/// handler or a start-up arrives as a `panic` error) to a directive. Rules are
/// tried in the order they were added; the first whose test holds anywhere in
/// the error tree (`keel::is`, `keel::as`) wins:
/// @code
///   keel::decider d;
///   d.on(keel::code::invalid_argument, keel::directive::resume)  // bad input: keep going
///    .on(shop::db_errc::connection_lost, keel::directive::restart)
///    .on_category("payments", keel::directive::escalate)
///    .on_detail<keel::panic_info>(keel::directive::restart)
///    .otherwise(keel::directive::stop);
/// @endcode
/// An empty decider (no rules, no fallback) means "inherit": a child without
/// its own decider uses its supervisor's, and a nested supervisor without one
/// uses its parent's. At the root, `decider::standard()` applies: restart on
/// every failure, as Erlang/OTP and Akka classic do.

#include "keel/error/error.hpp"
#include "keel/error/rules.hpp"

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace keel {

/// The four answers a supervisor can give to a failed child.
enum class directive : uint8_t {
  /// Throw the child's state away and start a fresh instance (same address for
  /// stages); the failed message is retried on it.
  restart,
  /// Keep the child's state and go on; the failed message is retried.
  resume,
  /// Stop the child for good; its pending messages go to the dead letters.
  stop,
  /// Stop all children and fail to the supervisor's own parent.
  escalate,
};

/// "restart", "resume", "stop", "escalate".
std::string_view to_string(directive d) noexcept;

/// An ordered list of rules from failures to directives. Cheap to copy
/// (shared, immutable once handed to a supervisor).
class decider {
public:
  /// A test on the failure.
  using predicate = std::function<bool(const error&)>;

  /// An empty decider: "inherit from the supervisor".
  decider() = default;

  /// A decider that always answers `d`.
  static decider always(directive d);

  /// Restart on every failure (the root default, as in Erlang/OTP and Akka).
  static decider standard();

  /// Rule: any node of the failure has canonical code `c`.
  decider& on(code c, directive d) {
    rules_.on(c, d);
    return *this;
  }

  /// Rule: any node of the failure has application code `e`.
  template <error_code_enum_type E>
  decider& on(E e, directive d) {
    rules_.on(e, d);
    return *this;
  }

  /// Rule: any node of the failure belongs to the category named `name`.
  decider& on_category(std::string name, directive d) {
    rules_.on_category(std::move(name), d);
    return *this;
  }

  /// Rule: the failure carries a detail of type `T` (e.g. `panic_info` for
  /// exceptions).
  template <detail_type T>
  decider& on_detail(directive d) {
    rules_.template on_detail<T>(d);
    return *this;
  }

  /// Rule: an arbitrary test.
  decider& on_if(predicate test, directive d) {
    rules_.on_if(std::move(test), d);
    return *this;
  }

  /// The answer when no rule matched (without one, `restart`).
  decider& otherwise(directive d) {
    rules_.otherwise(d);
    return *this;
  }

  /// True when the decider has rules or a fallback (it does not inherit).
  bool defined() const noexcept { return rules_.defined(); }

  /// Applies the rules to `failure`.
  directive operator()(const error& failure) const {
    if (auto d = rules_.match(failure))
      return *d;
    return rules_.fallback().value_or(directive::restart);
  }

private:
  error_rules<directive> rules_;
};

} // namespace keel
