/// @file
/// `keel::error`: the one error type of keel.
///
/// A `keel::error` is an immutable, copyable, serializable value. It is either
/// empty (no error; `if (err)` is false) or holds:
///  - a code in a category (`code()`, `category()`, `value()`): what kind of
///    failure, and through its canonical code what to do about it;
///  - a message;
///  - a cause, added at each boundary with `wrap` (Go's `fmt.Errorf("...: %w")`);
///  - children, made by `join` (Go's `errors.Join`);
///  - typed details (`stage_info`, `panic_info`, your own types).
///
/// Queries walk the whole tree depth-first (node, then its cause, then its
/// children): `is(err, code)`, `is(err, other)`, `as<T>(err)`, `visit(err, ...)`.
/// Trees are built bottom-up from immutable nodes, so cycles are impossible by
/// construction, and copies share nodes (a copy costs one atomic increment).
///
/// @code
///   keel::error parse(std::string_view row) {
///     if (row.empty())
///       return keel::invalid_argument_error("empty row");
///     return {};
///   }
///   keel::error import(std::span<const std::string> rows) {
///     std::vector<keel::error> errs;
///     for (std::size_t i = 0; i < rows.size(); ++i)
///       if (auto err = parse(rows[i]))
///         errs.push_back(keel::with_detail(keel::wrap(err, "stage parse"),
///                                          keel::stage_info{"parse", std::to_string(i), 1}));
///     return keel::join(std::move(errs));  // empty when every row parsed
///   }
///   auto err = import(rows);
///   if (keel::is(err, keel::code::invalid_argument)) ...
///   if (auto where = keel::as<keel::stage_info>(err)) ...
/// @endcode
///
/// Why not `std::error_code` or `caf::error`? Neither has a cause chain,
/// children or typed details, and both lose the message when they cross a
/// process. `keel::error` converts losslessly to `caf::error` (keel/error/caf.hpp)
/// and to `std::error_code` at OS edges (keel/error/status.hpp).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <caf/error.hpp>
#include <caf/meta/load_callback.hpp>
#include <caf/meta/type_name.hpp>

#include "keel/error/category.hpp"
#include "keel/error/code.hpp"
#include "keel/error/detail.hpp"

namespace keel {

class error;

namespace detail {

struct error_node;

/// The flat, positional form of an error tree used by CAF's serializers.
struct wire_detail {
  std::string type;
  std::string json;
};

struct wire_node {
  std::string category;
  std::string code_name;
  uint8_t value = 0;
  uint8_t canonical = 0;
  uint8_t flags = 0; // bit 0: has cause, bit 1: is a join
  uint32_t children = 0;
  std::string message;
  std::vector<wire_detail> details;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, wire_detail& x) {
  return f(caf::meta::type_name("keel::wire_detail"), x.type, x.json);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, wire_node& x) {
  return f(caf::meta::type_name("keel::wire_node"), x.category, x.code_name, x.value, x.canonical,
           x.flags, x.children, x.message, x.details);
}

/// Pre-order flattening of an error tree; empty for an empty error.
std::vector<wire_node> to_wire(const error& x);

/// Rebuilds an error from `to_wire`'s output. Malformed input (from a broken
/// or hostile peer) never fails: it yields a `data_loss` error saying what was
/// wrong with it.
error from_wire(const std::vector<wire_node>& nodes);

} // namespace detail

/// The error type of keel; see the file overview.
class [[nodiscard]] error {
public:
  // -- constructors -----------------------------------------------------------

  /// An empty error: no failure.
  error() noexcept = default;

  // -- properties -------------------------------------------------------------

  /// True when this holds a failure.
  explicit operator bool() const noexcept { return node_ != nullptr; }

  /// True when this holds no failure.
  bool empty() const noexcept { return node_ == nullptr; }

  /// The canonical code: for the canonical category the code itself, for an
  /// application category the code its category maps to. `code::ok` when empty.
  keel::code code() const noexcept;

  /// The category name, e.g. "keel"; empty when empty.
  std::string_view category() const noexcept;

  /// The raw code value within the category; 0 when empty.
  uint8_t value() const noexcept;

  /// The name of the code in its category, e.g. "unavailable".
  std::string code_name() const;

  /// This node's own message (without cause or children); empty for a join.
  std::string_view message() const noexcept;

  /// The wrapped error; empty when this node wraps nothing.
  const error& cause() const noexcept;

  /// The joined errors; empty unless `is_join()`.
  std::span<const error> children() const noexcept;

  /// True for a node made by `join` of two or more errors.
  bool is_join() const noexcept;

  /// This node's details (not those of its cause or children).
  std::span<const std::shared_ptr<const error_detail>> details() const noexcept;

  /// True when both refer to the same node (a copy of the same error).
  bool same_node(const error& other) const noexcept { return node_ == other.node_; }

  /// Structural equality: same codes, messages, details, causes and children.
  friend bool operator==(const error& x, const error& y);

  // -- CAF serialization -------------------------------------------------------

  template <class Inspector>
  friend typename Inspector::result_type inspect(Inspector& f, error& x) {
    std::vector<detail::wire_node> nodes;
    if constexpr (Inspector::reads_state) {
      nodes = detail::to_wire(x);
      return f(caf::meta::type_name("keel::error"), nodes);
    } else {
      auto load = caf::meta::load_callback([&]() -> caf::error {
        x = detail::from_wire(nodes);
        return caf::none;
      });
      return f(caf::meta::type_name("keel::error"), nodes, load);
    }
  }

private:
  friend struct detail::error_node;
  friend class error_builder;
  friend error with_detail(error err, std::shared_ptr<const error_detail> d);

  explicit error(std::shared_ptr<const detail::error_node> node) noexcept
      : node_(std::move(node)) {}

  std::shared_ptr<const detail::error_node> node_;
};

namespace detail {

/// One immutable node of an error tree.
struct error_node {
  const error_category* category = nullptr;
  std::shared_ptr<const error_category> owned_category; // for foreign categories
  uint8_t value = 0;
  keel::code canonical = keel::code::ok;
  bool join = false;
  std::string message;
  error cause;
  std::vector<error> children;
  std::vector<std::shared_ptr<const error_detail>> details;

  error_node() = default;
  error_node(const error_node&) = default;

  /// Tears down long chains iteratively, so that destroying a cause chain of
  /// any depth cannot overflow the stack.
  ~error_node();
};

} // namespace detail

// Accessors are inline: `walk`, `is` and `as` call them for every node.

namespace detail {

/// What `cause()` returns for a node without cause: constant-initialized, so
/// reading it costs no guard check.
inline constinit const error no_error{};

} // namespace detail

inline keel::code error::code() const noexcept {
  return node_ ? node_->canonical : keel::code::ok;
}

inline std::string_view error::category() const noexcept {
  return node_ ? node_->category->name() : std::string_view{};
}

inline uint8_t error::value() const noexcept {
  return node_ ? node_->value : 0;
}

inline std::string_view error::message() const noexcept {
  return node_ ? std::string_view{node_->message} : std::string_view{};
}

inline const error& error::cause() const noexcept {
  return node_ ? node_->cause : detail::no_error;
}

inline std::span<const error> error::children() const noexcept {
  if (!node_)
    return {};
  return node_->children;
}

inline bool error::is_join() const noexcept {
  return node_ && node_->join;
}

inline std::span<const std::shared_ptr<const error_detail>> error::details() const noexcept {
  if (!node_)
    return {};
  return node_->details;
}

/// Builds error nodes; the only way to make a non-empty `keel::error`. Used by
/// the factories below and by deserializers.
class error_builder {
public:
  /// Starts a node with `value` in `category`.
  error_builder(const error_category& category, uint8_t value);

  /// Starts a node with the same category and code as `like` (non-empty);
  /// shares its category object, so no allocation for foreign categories.
  explicit error_builder(const error& like);

  /// Starts a node in a category this process does not know. A canonical
  /// `code::ok` becomes `code::unknown`: a failure must not read as success.
  error_builder(std::string_view category, uint8_t value, std::string code_name, code canonical);

  error_builder& message(std::string text);
  error_builder& cause(error e);
  error_builder& children(std::vector<error> es);
  error_builder& detail(std::shared_ptr<const error_detail> d);

  /// The finished error.
  error build();

private:
  std::shared_ptr<detail::error_node> node_;
};

// -- factories -----------------------------------------------------------------

/// An error with `value` in `category`.
error make_error(const error_category& category, uint8_t value, std::string message);

/// An error with a canonical code. `make_error(code::ok, ...)` gives an empty error.
error make_error(code c, std::string message);

/// An error with a code of an application category.
template <error_code_enum_type E>
error make_error(E e, std::string message) {
  return make_error(category_of<E>(), static_cast<uint8_t>(e), std::move(message));
}

#define KEEL_ERROR_FACTORY(name, num)                                                              \
  /** An error with code `name`. */                                                                \
  inline error name##_error(std::string message) {                                                 \
    return make_error(code::name, std::move(message));                                             \
  }
KEEL_CANONICAL_CODES(KEEL_ERROR_FACTORY)
#undef KEEL_ERROR_FACTORY

/// Adds context at a boundary, like Go's `fmt.Errorf("stage parse: %w", err)`:
/// a node with `message` whose cause is `cause` and whose code is the cause's.
/// Wrapping an empty error gives an empty error, so `return wrap(f(), "f");`
/// stays correct when `f` succeeds.
error wrap(error cause, std::string message);

/// Like `wrap`, but classifies the failure anew at this boundary, e.g. a
/// storage layer that reports a locked database as `unavailable`.
error wrap(error cause, code c, std::string message);

/// `wrap` with an application code.
template <error_code_enum_type E>
error wrap(error cause, E e, std::string message) {
  if (!cause)
    return {};
  return error_builder{category_of<E>(), static_cast<uint8_t>(e)}
      .message(std::move(message))
      .cause(std::move(cause))
      .build();
}

/// Joins errors, like Go's `errors.Join`: empty errors are dropped, joins
/// without message or details are flattened into the result, one remaining
/// error is returned as it is, none gives an empty error. A join's code is the
/// code of its first child; `is` and `as` look at every child.
error join(std::vector<error> errors);

/// Variadic `join`.
template <class... Es>
requires(std::is_convertible_v<Es, error>&&...) error join(Es&&... errors) {
  std::vector<error> xs;
  xs.reserve(sizeof...(Es));
  (xs.emplace_back(std::forward<Es>(errors)), ...);
  return join(std::move(xs));
}

/// Returns `err` with `d` added to its top node's details; empty stays empty.
error with_detail(error err, std::shared_ptr<const error_detail> d);

/// Returns `err` with a typed detail added to its top node; empty stays empty.
template <detail_type T>
error with_detail(error err, T d) {
  if (!err)
    return err;
  return with_detail(std::move(err), make_detail(std::move(d)));
}

// -- traversal -----------------------------------------------------------------

/// Calls `f(node)` for every node of `err` depth-first (node, cause, children),
/// stopping early when `f` returns false. Iterative: any depth is safe.
/// Returns false when stopped early.
template <class F>
bool walk(const error& err, F&& f) {
  if (!err)
    return true;
  if (!f(err))
    return false;
  // One frame per level of depth (not per node): a wide join costs one frame.
  struct frame {
    const error* cause;
    std::span<const error> kids;
    std::size_t next;
  };
  std::vector<frame> stack;
  auto descend = [&stack](const error& n) {
    if (n.cause() || !n.children().empty())
      stack.push_back({n.cause() ? &n.cause() : nullptr, n.children(), 0});
  };
  descend(err);
  while (!stack.empty()) {
    auto& top = stack.back();
    const error* next = nullptr;
    if (top.cause) {
      next = std::exchange(top.cause, nullptr);
    } else if (top.next < top.kids.size()) {
      next = &top.kids[top.next++];
    } else {
      stack.pop_back();
      continue;
    }
    if (!f(*next))
      return false;
    descend(*next);
  }
  return true;
}

/// True when some node of `err` has canonical code `c` (`code::ok` matches only
/// an empty error).
bool is(const error& err, code c) noexcept;

/// True when some node of `err` has code `e` of an application category.
template <error_code_enum_type E>
bool is(const error& err, E e) noexcept {
  auto name = error_code_enum<E>::category;
  auto v = static_cast<uint8_t>(e);
  return !walk(err, [&](const error& n) { return !(n.value() == v && n.category() == name); });
}

/// True when some node of `err` is `target`: the same node (a copy of a
/// sentinel), or a node with the same category, value and message as the top
/// node of `target` (so that it also holds after a round trip through JSON or
/// the wire). An empty target matches only an empty error.
bool is(const error& err, const error& target) noexcept;

/// The first detail of type `T` in `err`, depth-first; details from a peer
/// are decoded on the way. Nullopt when there is none (or none that decodes).
template <detail_type T>
std::optional<T> as(const error& err) {
  std::optional<T> result;
  walk(err, [&](const error& n) {
    for (const auto& d : n.details()) {
      if (auto p = d->template local<T>()) {
        result = *p;
        return false;
      }
      if (d->type_name() == detail_traits<T>::name) {
        auto decoded = detail_traits<T>::from_json(d->to_json());
        if (decoded) {
          result = std::move(*decoded);
          return false;
        }
      }
    }
    return true;
  });
  return result;
}

/// The first code of application category `E` in `err`, depth-first.
template <error_code_enum_type E>
std::optional<E> as(const error& err) {
  std::optional<E> result;
  walk(err, [&](const error& n) {
    if (n.category() != error_code_enum<E>::category)
      return true;
    result = static_cast<E>(n.value());
    return false;
  });
  return result;
}

namespace detail {

template <class F>
struct handler_arg;

template <class R, class A>
struct handler_arg<R (*)(A)> {
  using type = std::remove_cvref_t<A>;
};

template <class C, class R, class A>
struct handler_arg<R (C::*)(A) const> {
  using type = std::remove_cvref_t<A>;
};

template <class C, class R, class A>
struct handler_arg<R (C::*)(A)> {
  using type = std::remove_cvref_t<A>;
};

template <class F>
requires requires {
  &F::operator();
}
struct handler_arg<F> : handler_arg<decltype(&F::operator())> {};

template <class F>
using handler_arg_t = typename handler_arg<std::remove_cvref_t<F>>::type;

template <class H>
bool try_handle(const error& n, H& h) {
  using arg = handler_arg_t<H>;
  if constexpr (std::is_same_v<arg, error>) {
    h(n);
    return true;
  } else {
    static_assert(detail_type<arg>, "a visit handler takes const keel::error& or a detail type");
    for (const auto& d : n.details()) {
      if (auto p = d->template local<arg>()) {
        h(*p);
        return true;
      }
      if (d->type_name() == detail_traits<arg>::name) {
        if (auto decoded = detail_traits<arg>::from_json(d->to_json())) {
          h(*decoded);
          return true;
        }
      }
    }
    return false;
  }
}

} // namespace detail

/// Dispatches every node of `err`, depth-first, to the first handler that
/// accepts it, like LLVM's `handleErrors`. A handler takes either a detail
/// type (`const keel::stage_info&`: called for nodes that carry one) or
/// `const keel::error&` (called for any node; put it last as a catch-all).
/// Nodes no handler accepts are skipped. Returns the number of nodes handled.
template <class... Handlers>
std::size_t visit(const error& err, Handlers&&... handlers) {
  std::size_t handled = 0;
  walk(err, [&](const error& n) {
    if ((detail::try_handle(n, handlers) || ...))
      ++handled;
    return true;
  });
  return handled;
}

#define KEEL_ERROR_PREDICATE(name, num)                                                            \
  /** True when some node of `err` has code `name`. */                                             \
  inline bool is_##name(const error& err) noexcept {                                               \
    return is(err, code::name);                                                                    \
  }
KEEL_CANONICAL_CODES(KEEL_ERROR_PREDICATE)
#undef KEEL_ERROR_PREDICATE

/// The number of nodes in `err`'s tree.
std::size_t node_count(const error& err) noexcept;

/// The individual failures in `err`: the children of joins, one by one, and
/// otherwise a whole wrap chain as one failure seen from its top node (so a
/// boundary that reclassified the failure is what counts). A wrap over a join
/// yields the join's failures. Used to count and classify failures.
std::vector<error> failures(const error& err);

/// The leaves of `err`'s tree (nodes without cause or children), in walk order:
/// the individual failures behind joins and wraps.
std::vector<error> leaves(const error& err);

} // namespace keel

#include "keel/error/expected.hpp"
