/// @file
/// Exceptions at actor boundaries: every exception becomes a `panic` error.
///
/// Exceptions never cross an actor boundary in keel. Each keel actor catches
/// what its handlers throw and turns it into a `panic` error with a
/// `panic_info` detail (exception type, what(), stack trace) that a
/// supervisor's decider then looks at. Any exception qualifies, including ones
/// that do not derive from `std::exception`.
///
/// Stack traces: C++ cannot see the stack of an arbitrary exception's throw
/// site once it has been caught, so `make_panic_error` records the stack where
/// it is called (the catch site). Code that wants the throw site throws with
/// `keel::throw_with_trace(e)`, which records the stack before throwing.
///
/// @code
///   auto err = keel::make_panic_error(std::current_exception());  // in a catch block
///   auto r = keel::invoke_guarded([&] { return risky(); });  // expected<...>
/// @endcode
#pragma once

#include <exception>
#include <type_traits>
#include <typeinfo>
#include <utility>

#include "keel/error/error.hpp"

namespace keel {

/// Base of exceptions thrown by `throw_with_trace`: carries the throw-site stack.
class traced_exception_base {
public:
  explicit traced_exception_base(stack_trace trace) : trace_(std::move(trace)) {}
  virtual ~traced_exception_base() = default;

  const stack_trace& trace() const noexcept { return trace_; }

  /// The type that was passed to `throw_with_trace`.
  virtual const std::type_info& thrown_type() const noexcept = 0;

private:
  stack_trace trace_;
};

/// `E` with the stack of its throw site.
template <class E>
class traced_exception final : public E, public traced_exception_base {
public:
  traced_exception(E e, stack_trace trace)
      : E(std::move(e)), traced_exception_base(std::move(trace)) {}

  const std::type_info& thrown_type() const noexcept override { return typeid(E); }
};

/// Throws `e` (as a type derived from `E`) with the current stack attached, so
/// that `make_panic_error` reports where it was thrown.
template <class E>
requires(std::is_class_v<std::decay_t<E>> && !std::is_final_v<std::decay_t<E>>)
    [[noreturn]] void throw_with_trace(E&& e) {
  throw traced_exception<std::decay_t<E>>(std::forward<E>(e), stack_trace::capture(1));
}

/// Converts any exception into a `panic` error with a `panic_info` detail;
/// an empty pointer gives an empty error. The reported exception type is that
/// of the thrown object (for `throw_with_trace`, the type passed in).
error make_panic_error(std::exception_ptr ep);

/// Calls `f()`; an exception becomes a `panic` error, a returned `keel::error`
/// or `expected` passes through, any other return value is wrapped.
template <class F>
auto invoke_guarded(F&& f) {
  using R = std::invoke_result_t<F>;
  if constexpr (std::is_void_v<R>) {
    try {
      std::forward<F>(f)();
      return expected<void>{};
    } catch (...) {
      return expected<void>{make_panic_error(std::current_exception())};
    }
  } else if constexpr (std::is_same_v<R, error>) {
    try {
      return std::forward<F>(f)();
    } catch (...) {
      return make_panic_error(std::current_exception());
    }
  } else {
    using E = std::conditional_t < requires {
      typename R::error_type;
    }
    , R, expected < R >> ;
    try {
      return E(std::forward<F>(f)());
    } catch (...) {
      return E(make_panic_error(std::current_exception()));
    }
  }
}

} // namespace keel
