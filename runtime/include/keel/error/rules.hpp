#pragma once

/// \file
/// Ordered rules that map an error to an answer, first match wins.
///
/// Supervision deciders (error -> directive) and pipeline error policies
/// (error -> what becomes of the item) are both such a table: rules by code,
/// application code, category, detail type or predicate, and a fallback.
///
///     error_rules<int> r{0};
///     r.on(code::unavailable, 1).on_category("shop.db", 2);
///     r(unavailable_error("down"));  // 1

#include "keel/error/error.hpp"

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace keel {

/// An ordered list of (test, answer) rules with a fallback answer. Copies are
/// cheap and independent (copy on write).
template <class Answer>
class error_rules {
public:
  using predicate = std::function<bool(const error&)>;

  error_rules() = default;

  /// Rules with `fallback` as the answer when nothing matches.
  explicit error_rules(Answer fallback) { mutable_impl().fallback = fallback; }

  /// Matches errors for which `is(err, c)` holds (anywhere in the tree).
  error_rules& on(code c, Answer a) {
    return on_if([c](const error& err) { return is(err, c); }, a);
  }

  /// Matches an application code anywhere in the tree.
  template <error_code_enum_type E>
  error_rules& on(E e, Answer a) {
    return on_if([e](const error& err) { return is(err, e); }, a);
  }

  /// Matches errors with a node in category `name`.
  error_rules& on_category(std::string name, Answer a) {
    return on_if(
        [name = std::move(name)](const error& err) {
          return !walk(err, [&](const error& n) { return n.category() != name; });
        },
        a);
  }

  /// Matches errors carrying a detail of type `T`.
  template <detail_type T>
  error_rules& on_detail(Answer a) {
    return on_if([](const error& err) { return as<T>(err).has_value(); }, a);
  }

  /// Matches errors for which `test` returns true.
  error_rules& on_if(predicate test, Answer a) {
    mutable_impl().rules.push_back(rule{std::move(test), a});
    return *this;
  }

  /// The answer when no rule matches.
  error_rules& otherwise(Answer a) {
    mutable_impl().fallback = a;
    return *this;
  }

  /// Puts `other`'s rules before this table's (its fallback is ignored).
  error_rules& prepend(const error_rules& other) {
    if (!other.impl_ || other.impl_->rules.empty())
      return *this;
    auto first = other.impl_->rules; // copy first: `other` may be `*this`
    auto& rs = mutable_impl().rules;
    rs.insert(rs.begin(), first.begin(), first.end());
    return *this;
  }

  /// Whether any rule or fallback was set.
  bool defined() const noexcept { return impl_ != nullptr; }

  /// The first matching rule's answer; nullopt when no rule matches.
  std::optional<Answer> match(const error& err) const {
    if (impl_)
      for (const auto& r : impl_->rules)
        if (r.test(err))
          return r.answer;
    return std::nullopt;
  }

  /// The first matching rule's answer, else the fallback (else `Answer{}`).
  Answer operator()(const error& err) const {
    if (auto a = match(err))
      return *a;
    return impl_ && impl_->fallback ? *impl_->fallback : Answer{};
  }

  /// The fallback, if one was set.
  std::optional<Answer> fallback() const { return impl_ ? impl_->fallback : std::nullopt; }

private:
  struct rule {
    predicate test;
    Answer answer;
  };

  struct impl {
    std::vector<rule> rules;
    std::optional<Answer> fallback;
  };

  impl& mutable_impl() {
    if (!impl_)
      impl_ = std::make_shared<impl>();
    else if (impl_.use_count() > 1)
      impl_ = std::make_shared<impl>(*impl_); // copies stay independent
    return *impl_;
  }

  std::shared_ptr<impl> impl_;
};

} // namespace keel
