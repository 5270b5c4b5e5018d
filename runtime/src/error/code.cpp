#include "keel/error/code.hpp"

#include <array>
#include <ostream>
#include <string>

#include "keel/error/category.hpp"

namespace keel {

namespace {

constexpr std::array<std::string_view, max_canonical_code + 1> code_names = {
    "ok",
#define KEEL_CODE_NAME(name, num) #name,
    KEEL_CANONICAL_CODES(KEEL_CODE_NAME)
#undef KEEL_CODE_NAME
};

class canonical_category_impl final : public error_category {
public:
  std::string_view name() const noexcept override { return canonical_category_name; }

  std::string code_name(uint8_t value) const override {
    return std::string{to_string(static_cast<code>(value))};
  }

  code canonical(uint8_t value) const noexcept override {
    return code_from_value(value).value_or(code::unknown);
  }
};

class canonical_std_category_impl final : public std::error_category {
public:
  const char* name() const noexcept override { return "keel"; }

  std::string message(int value) const override {
    if (value < 0 || value > max_canonical_code)
      return "unknown keel code " + std::to_string(value);
    return std::string{to_string(static_cast<code>(value))};
  }
};

} // namespace

std::string_view to_string(code c) noexcept {
  auto v = static_cast<std::size_t>(c);
  return v < code_names.size() ? code_names[v] : std::string_view{"unknown"};
}

std::optional<code> code_from_string(std::string_view name) noexcept {
  for (std::size_t i = 0; i < code_names.size(); ++i)
    if (code_names[i] == name)
      return static_cast<code>(i);
  return std::nullopt;
}

std::ostream& operator<<(std::ostream& os, code c) {
  return os << to_string(c);
}

std::string_view to_string(retry_advice a) noexcept {
  switch (a) {
    case retry_advice::do_not_retry:
      return "do_not_retry";
    case retry_advice::retry_call:
      return "retry_call";
    case retry_advice::retry_higher_level:
      return "retry_higher_level";
    case retry_advice::retry_after_fix:
      return "retry_after_fix";
  }
  return "do_not_retry";
}

const std::error_category& canonical_std_category() noexcept {
  static const canonical_std_category_impl instance;
  return instance;
}

const error_category& canonical_category() noexcept {
  static const canonical_category_impl instance;
  return instance;
}

} // namespace keel
