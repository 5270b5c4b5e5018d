#include "keel/error/error.hpp"

#include <cxxabi.h>

#include <cstdlib>
#include <utility>

#include "keel/error/expected.hpp"
#include "keel/error/format.hpp"

namespace keel {

namespace detail {

namespace {

/// A category this process does not know, as read from a peer or a journal:
/// it remembers the one code it was made for.
class foreign_category final : public error_category {
public:
  foreign_category(std::string_view name, uint8_t value, std::string code_name, code canonical)
      : name_(name), value_(value), code_name_(std::move(code_name)), canonical_(canonical) {}

  std::string_view name() const noexcept override { return name_; }

  std::string code_name(uint8_t value) const override {
    if (value == value_ && !code_name_.empty())
      return code_name_;
    return "code " + std::to_string(value);
  }

  code canonical(uint8_t) const noexcept override { return canonical_; }

private:
  std::string name_;
  uint8_t value_;
  std::string code_name_;
  code canonical_;
};

} // namespace

error_node::~error_node() {
  // Move out every subtree that only this node keeps alive and release them one
  // by one: each then dies with no subtrees of its own, so depth costs heap,
  // not stack. A subtree still shared elsewhere just loses one reference.
  std::vector<std::shared_ptr<const error_node>> pending;
  auto take = [&pending](error& e) {
    if (e.node_ && e.node_.use_count() == 1)
      pending.push_back(std::move(e.node_));
  };
  take(cause);
  for (auto& c : children)
    take(c);
  while (!pending.empty()) {
    auto p = std::move(pending.back());
    pending.pop_back();
    if (p.use_count() == 1) {
      // Sole owner of a node created non-const by error_builder: safe to gut.
      auto* n = const_cast<error_node*>(p.get());
      take(n->cause);
      for (auto& c : n->children)
        take(c);
    }
  }
}

} // namespace detail

// -- error ----------------------------------------------------------------------

std::string error::code_name() const {
  return node_ ? node_->category->code_name(node_->value) : std::string{"ok"};
}

namespace {

bool same_details(const error& x, const error& y) {
  auto xs = x.details();
  auto ys = y.details();
  if (xs.size() != ys.size())
    return false;
  for (std::size_t i = 0; i < xs.size(); ++i)
    if (xs[i] != ys[i]
        && (xs[i]->type_name() != ys[i]->type_name() || xs[i]->to_json() != ys[i]->to_json()))
      return false;
  return true;
}

bool same_top(const error& x, const error& y) {
  return x.value() == y.value() && x.code() == y.code() && x.category() == y.category()
         && x.message() == y.message();
}

} // namespace

bool operator==(const error& x, const error& y) {
  std::vector<std::pair<const error*, const error*>> stack{{&x, &y}};
  while (!stack.empty()) {
    auto [a, b] = stack.back();
    stack.pop_back();
    if (a->same_node(*b))
      continue;
    if (a->empty() != b->empty() || a->is_join() != b->is_join() || !same_top(*a, *b)
        || a->code_name() != b->code_name() || !same_details(*a, *b))
      return false;
    auto ak = a->children();
    auto bk = b->children();
    if (ak.size() != bk.size())
      return false;
    for (std::size_t i = 0; i < ak.size(); ++i)
      stack.emplace_back(&ak[i], &bk[i]);
    stack.emplace_back(&a->cause(), &b->cause());
  }
  return true;
}

// -- error_builder --------------------------------------------------------------

error_builder::error_builder(const error_category& category, uint8_t value)
    : node_(std::make_shared<detail::error_node>()) {
  node_->category = &category;
  node_->value = value;
  node_->canonical = category.canonical(value);
}

error_builder::error_builder(std::string_view category, uint8_t value, std::string code_name,
                             code canonical)
    : node_(std::make_shared<detail::error_node>()) {
  // A non-empty error must not claim "ok": that would read as success.
  if (canonical == code::ok)
    canonical = code::unknown;
  node_->owned_category =
      std::make_shared<detail::foreign_category>(category, value, std::move(code_name), canonical);
  node_->category = node_->owned_category.get();
  node_->value = value;
  node_->canonical = canonical;
}

error_builder::error_builder(const error& like) : node_(std::make_shared<detail::error_node>()) {
  if (!like) {
    node_->category = &canonical_category();
    node_->value = static_cast<uint8_t>(code::unknown);
    node_->canonical = code::unknown;
    return;
  }
  node_->category = like.node_->category;
  node_->owned_category = like.node_->owned_category;
  node_->value = like.node_->value;
  node_->canonical = like.node_->canonical;
}

error_builder& error_builder::message(std::string text) {
  node_->message = std::move(text);
  return *this;
}

error_builder& error_builder::cause(error e) {
  node_->cause = std::move(e);
  return *this;
}

error_builder& error_builder::children(std::vector<error> es) {
  node_->children = std::move(es);
  // A join holds at least two errors (as `join` makes them); one child is a
  // plain child, which keeps the wire and JSON forms unambiguous.
  node_->join = node_->children.size() >= 2;
  return *this;
}

error_builder& error_builder::detail(std::shared_ptr<const error_detail> d) {
  if (d)
    node_->details.push_back(std::move(d));
  return *this;
}

error error_builder::build() {
  return error{std::move(node_)};
}

// -- factories ------------------------------------------------------------------

error make_error(const error_category& category, uint8_t value, std::string message) {
  return error_builder{category, value}.message(std::move(message)).build();
}

error make_error(code c, std::string message) {
  if (c == code::ok)
    return {};
  return make_error(canonical_category(), static_cast<uint8_t>(c), std::move(message));
}

error wrap(error cause, std::string message) {
  if (!cause)
    return {};
  return error_builder{cause}.message(std::move(message)).cause(std::move(cause)).build();
}

error wrap(error cause, code c, std::string message) {
  if (!cause)
    return {};
  if (c == code::ok)
    return wrap(std::move(cause), std::move(message));
  return error_builder{canonical_category(), static_cast<uint8_t>(c)}
      .message(std::move(message))
      .cause(std::move(cause))
      .build();
}

error join(std::vector<error> errors) {
  std::vector<error> kept;
  kept.reserve(errors.size());
  for (auto& e : errors) {
    if (!e)
      continue;
    if (e.is_join() && e.message().empty() && e.details().empty()) {
      for (const auto& c : e.children())
        kept.push_back(c);
    } else {
      kept.push_back(std::move(e));
    }
  }
  if (kept.empty())
    return {};
  if (kept.size() == 1)
    return std::move(kept.front());
  return error_builder{kept.front()}.children(std::move(kept)).build();
}

error with_detail(error err, std::shared_ptr<const error_detail> d) {
  if (!err || !d)
    return err;
  auto copy = std::make_shared<detail::error_node>(*err.node_);
  if (copy->owned_category)
    copy->category = copy->owned_category.get();
  copy->details.push_back(std::move(d));
  return error{std::shared_ptr<const detail::error_node>{std::move(copy)}};
}

// -- queries --------------------------------------------------------------------

bool is(const error& err, code c) noexcept {
  if (c == code::ok)
    return err.empty();
  return !walk(err, [c](const error& n) { return n.code() != c; });
}

bool is(const error& err, const error& target) noexcept {
  if (!target)
    return err.empty();
  return !walk(err, [&](const error& n) { return !(n.same_node(target) || same_top(n, target)); });
}

std::size_t node_count(const error& err) noexcept {
  std::size_t n = 0;
  walk(err, [&n](const error&) {
    ++n;
    return true;
  });
  return n;
}

std::vector<error> leaves(const error& err) {
  std::vector<error> result;
  walk(err, [&result](const error& n) {
    if (!n.cause() && n.children().empty())
      result.push_back(n);
    return true;
  });
  return result;
}

std::vector<error> failures(const error& err) {
  std::vector<error> result;
  if (!err)
    return result;
  std::vector<const error*> todo{&err};
  while (!todo.empty()) {
    const error* n = todo.back();
    todo.pop_back();
    const error* m = n;
    while (m->cause() && !m->is_join())
      m = &m->cause();
    if (!m->is_join()) {
      result.push_back(*n);
      continue;
    }
    auto kids = m->children();
    for (auto i = kids.size(); i > 0; --i)
      todo.push_back(&kids[i - 1]);
  }
  return result;
}

std::string demangle(const char* mangled) {
  int status = 0;
  char* out = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
  if (status != 0 || out == nullptr)
    return mangled;
  std::string result{out};
  std::free(out);
  return result;
}

// -- expected -------------------------------------------------------------------

bad_expected_access::bad_expected_access(keel::error err)
    : err_(std::move(err)), what_("bad expected access: " + to_string(err_)) {}

namespace detail {

keel::error nonempty_or_internal(keel::error err) {
  if (err)
    return err;
  return internal_error("expected constructed from an empty error");
}

} // namespace detail

} // namespace keel
