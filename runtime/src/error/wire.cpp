// The positional wire form of an error tree, used by CAF's binary serializers.
//
// Pre-order: a node, then its cause subtree (flag bit 0), then its children
// subtrees (count). Rebuilding is iterative, so a hostile peer cannot blow the
// stack with a deep chain, and every count is checked against what is left.

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include "keel/error/error.hpp"

namespace keel::detail {

namespace {

constexpr uint8_t has_cause_flag = 1;
constexpr uint8_t join_flag = 2;

error malformed(std::string what) {
  return data_loss_error("malformed keel::error from a peer: " + std::move(what));
}

} // namespace

std::vector<wire_node> to_wire(const error& x) {
  std::vector<wire_node> result;
  walk(x, [&result](const error& n) {
    wire_node w;
    w.category = std::string{n.category()};
    if (w.category != canonical_category_name)
      w.code_name = n.code_name();
    w.value = n.value();
    w.canonical = static_cast<uint8_t>(n.code());
    w.flags =
        static_cast<uint8_t>((n.cause() ? has_cause_flag : 0) | (n.is_join() ? join_flag : 0));
    w.children = static_cast<uint32_t>(n.children().size());
    w.message = std::string{n.message()};
    for (const auto& d : n.details())
      w.details.push_back({std::string{d->type_name()}, boost::json::serialize(d->to_json())});
    result.push_back(std::move(w));
    return true;
  });
  return result;
}

error from_wire(const std::vector<wire_node>& nodes) {
  if (nodes.empty())
    return {};
  struct frame {
    std::size_t index;
    std::size_t needed;
    std::vector<error> parts; // cause first (if any), then children
  };
  std::vector<frame> stack;
  error root;
  bool have_root = false;
  for (std::size_t i = 0; i < nodes.size(); ++i) {
    const auto& w = nodes[i];
    if (have_root)
      return malformed("node " + std::to_string(i) + " follows a complete error tree");
    if (w.category.empty())
      return malformed("node " + std::to_string(i) + " has no category");
    if (w.canonical > max_canonical_code || w.canonical == 0)
      return malformed("node " + std::to_string(i) + " has canonical code "
                       + std::to_string(w.canonical) + ", expected 1.."
                       + std::to_string(max_canonical_code));
    if (w.category == canonical_category_name && w.value != w.canonical)
      return malformed("node " + std::to_string(i) + " of category keel has value "
                       + std::to_string(w.value) + " but canonical code "
                       + std::to_string(w.canonical));
    bool cause = (w.flags & has_cause_flag) != 0;
    bool join = (w.flags & join_flag) != 0;
    if (w.flags & ~(has_cause_flag | join_flag))
      return malformed("node " + std::to_string(i) + " has unknown flags");
    if (join != (w.children >= 2))
      return malformed("node " + std::to_string(i) + " has " + std::to_string(w.children)
                       + " children, but join flag " + (join ? "set" : "unset"));
    std::size_t needed = (cause ? 1 : 0) + std::size_t{w.children};
    if (needed > nodes.size() - i - 1)
      return malformed("node " + std::to_string(i) + " announces " + std::to_string(needed)
                       + " subtrees but only " + std::to_string(nodes.size() - i - 1)
                       + " nodes follow");
    stack.push_back({i, needed, {}});
    // Close every frame that has all its parts.
    while (!stack.empty() && stack.back().parts.size() == stack.back().needed) {
      auto f = std::move(stack.back());
      stack.pop_back();
      const auto& n = nodes[f.index];
      auto b =
          n.category == canonical_category_name
              ? error_builder{canonical_category(), n.value}
              : error_builder{n.category, n.value, n.code_name, static_cast<code>(n.canonical)};
      b.message(n.message);
      std::size_t first_child = 0;
      if (n.flags & has_cause_flag) {
        b.cause(std::move(f.parts.front()));
        first_child = 1;
      }
      if (n.children > 0)
        b.children({std::make_move_iterator(f.parts.begin() + first_child),
                    std::make_move_iterator(f.parts.end())});
      for (const auto& d : n.details) {
        boost::system::error_code ec;
        auto json = boost::json::parse(d.json, ec);
        if (ec)
          return malformed("node " + std::to_string(f.index) + " detail '" + d.type
                           + "' is not valid JSON: " + ec.message());
        b.detail(make_foreign_detail(d.type, std::move(json)));
      }
      auto built = b.build();
      if (stack.empty()) {
        root = std::move(built);
        have_root = true;
      } else {
        stack.back().parts.push_back(std::move(built));
      }
    }
  }
  if (!have_root)
    return malformed("the error tree is incomplete: " + std::to_string(stack.size())
                     + " nodes still wait for subtrees");
  return root;
}

} // namespace keel::detail
