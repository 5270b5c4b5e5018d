/// @file
/// Typed details attached to errors: stage attribution, panics, public messages,
/// and detail types an application defines.
///
/// A detail answers a question the code and message cannot: which stage and
/// item failed (`stage_info`), which exception escaped and where (`panic_info`),
/// what an outside caller may be told (`public_message`). Details survive JSON
/// and the wire. `keel::as<T>(err)` finds the first detail of type `T` in an
/// error tree.
///
/// An application adds its own detail type by specializing `detail_traits`:
/// @code
///   struct http_call { std::string url; int status; };
///   template <>
///   struct keel::detail_traits<http_call> {
///     static constexpr std::string_view name = "shop.http_call";
///     static boost::json::value to_json(const http_call& x) {
///       return {{"url", x.url}, {"status", x.status}};
///     }
///     static keel::expected<http_call> from_json(const boost::json::value& v);
///     static std::string to_string(const http_call& x) {
///       return x.url + " -> " + std::to_string(x.status);
///     }
///   };
///   auto err = keel::with_detail(keel::unavailable_error("upstream"), http_call{"/pay", 503});
///   auto call = keel::as<http_call>(err);  // std::optional<http_call>
/// @endcode
///
/// A detail type this process does not know (from a peer or a journal) is kept
/// as JSON under its name; `as<T>` decodes it through `detail_traits<T>` when
/// asked, so no registry is needed.
#pragma once

#include <concepts>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json/value.hpp>

namespace keel {

template <class T>
class expected;

/// Specialize to make `T` a detail type (see the file overview).
template <class T>
struct detail_traits;

/// Satisfied by types with a complete `detail_traits` specialization.
template <class T>
concept detail_type = requires(const T& x, const boost::json::value& v) {
  { detail_traits<T>::name } -> std::convertible_to<std::string_view>;
  { detail_traits<T>::to_json(x) } -> std::convertible_to<boost::json::value>;
  { detail_traits<T>::from_json(v) } -> std::same_as<expected<T>>;
  { detail_traits<T>::to_string(x) } -> std::convertible_to<std::string>;
};

/// A type-erased, immutable detail as it sits in an error.
class error_detail {
public:
  virtual ~error_detail() = default;

  /// The stable name of the detail type, e.g. "keel.stage".
  virtual std::string_view type_name() const noexcept = 0;

  /// The detail as JSON (its wire and journal form).
  virtual boost::json::value to_json() const = 0;

  /// A one-line rendering for formatted output.
  virtual std::string to_string() const = 0;

  /// The address of the typed value when it is a `T` made in this process.
  template <detail_type T>
  const T* local() const noexcept;

protected:
  /// Identifies the C++ type behind `local()`; null for foreign details.
  virtual const void* type_key() const noexcept = 0;
  virtual const void* value_ptr() const noexcept = 0;
};

namespace detail {

template <class T>
struct type_key_holder {
  static constexpr char key = 0;
};

template <detail_type T>
class detail_model final : public error_detail {
public:
  explicit detail_model(T value) : value_(std::move(value)) {}

  std::string_view type_name() const noexcept override { return detail_traits<T>::name; }

  boost::json::value to_json() const override { return detail_traits<T>::to_json(value_); }

  std::string to_string() const override { return detail_traits<T>::to_string(value_); }

protected:
  const void* type_key() const noexcept override { return &type_key_holder<T>::key; }

  const void* value_ptr() const noexcept override { return &value_; }

private:
  T value_;
};

/// Makes the detail for a type this process does not know: its name and JSON.
std::shared_ptr<const error_detail> make_foreign_detail(std::string type_name,
                                                        boost::json::value json);

} // namespace detail

template <detail_type T>
const T* error_detail::local() const noexcept {
  if (type_key() != &detail::type_key_holder<T>::key)
    return nullptr;
  return static_cast<const T*>(value_ptr());
}

/// Type-erases a detail value.
template <detail_type T>
std::shared_ptr<const error_detail> make_detail(T value) {
  return std::make_shared<detail::detail_model<T>>(std::move(value));
}

// -- built-in detail types ----------------------------------------------------

/// Where in a pipeline an error happened: the stage, the item and the attempt.
struct stage_info {
  /// Name of the stage, e.g. "parse".
  std::string stage;
  /// Identifier of the item being processed; empty when not about one item.
  std::string item_id;
  /// 1 for the first attempt; 0 when unknown.
  uint32_t attempt = 0;

  friend bool operator==(const stage_info&, const stage_info&) = default;
};

/// A stack trace. Captured as raw return addresses (cheap: about a microsecond
/// for 30 frames) and symbolized only when rendered; a trace read from JSON or
/// the wire holds the rendered lines.
class stack_trace {
public:
  stack_trace() = default;

  /// Captures the calling thread's stack, skipping `skip` innermost frames of
  /// the caller (the frame of `capture` itself is always skipped).
  static stack_trace capture(std::size_t skip = 0, std::size_t max_depth = 64);

  /// A trace made of already rendered lines.
  static stack_trace from_lines(std::vector<std::string> lines);

  /// True when no frame was captured.
  bool empty() const noexcept { return frames_.empty() && lines_.empty(); }

  /// The number of frames.
  std::size_t size() const noexcept { return frames_.empty() ? lines_.size() : frames_.size(); }

  /// One line per frame, innermost first: "function at file:line" where the
  /// debug information allows, else the address.
  std::vector<std::string> lines() const;

  friend bool operator==(const stack_trace& x, const stack_trace& y) {
    return x.lines() == y.lines();
  }

private:
  std::vector<void*> frames_;
  std::vector<std::string> lines_;
};

/// Where the stack trace of a panic was captured.
enum class capture_site : uint8_t {
  /// No trace.
  none = 0,
  /// Where the exception was thrown (`keel::throw_with_trace`).
  throw_site = 1,
  /// Where the exception was caught (the actor boundary).
  catch_site = 2,
};

/// An exception that escaped a handler and became a `panic` error.
struct panic_info {
  /// The demangled dynamic type of the exception, e.g. "std::out_of_range";
  /// "unknown exception type" for a foreign exception.
  std::string exception_type;
  /// `what()` for `std::exception`s; a rendering of the value for `const char*`
  /// and `std::string` throws; empty otherwise.
  std::string what;
  /// The stack trace; see `site` for where it was taken.
  stack_trace stack;
  /// Where `stack` was captured.
  capture_site site = capture_site::none;

  friend bool operator==(const panic_info&, const panic_info&) = default;
};

/// The message an outside caller (HTTP, gRPC client) may see. Without it,
/// `keel::to_public_status` shows a generic text for server-side failures.
struct public_message {
  std::string text;

  friend bool operator==(const public_message&, const public_message&) = default;
};

/// The origin of an error converted from a `std::error_code`.
struct std_error_info {
  /// `std::error_category::name()`, e.g. "generic" or "system".
  std::string category;
  /// The platform value, e.g. an errno.
  int value = 0;

  friend bool operator==(const std_error_info&, const std_error_info&) = default;
};

#define KEEL_DECLARE_BUILTIN_DETAIL(type, type_name_str)                                           \
  template <>                                                                                      \
  struct detail_traits<type> {                                                                     \
    static constexpr std::string_view name = type_name_str;                                        \
    static boost::json::value to_json(const type& x);                                              \
    static expected<type> from_json(const boost::json::value& v);                                  \
    static std::string to_string(const type& x);                                                   \
  };

KEEL_DECLARE_BUILTIN_DETAIL(stage_info, "keel.stage")
KEEL_DECLARE_BUILTIN_DETAIL(panic_info, "keel.panic")
KEEL_DECLARE_BUILTIN_DETAIL(public_message, "keel.public")
KEEL_DECLARE_BUILTIN_DETAIL(std_error_info, "keel.std_error")

#undef KEEL_DECLARE_BUILTIN_DETAIL

/// The demangled name of a `std::type_info` name.
std::string demangle(const char* mangled);

} // namespace keel
