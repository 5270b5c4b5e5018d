// One-line and multi-line renderings of errors. Both walk iteratively with an
// explicit work list, so a chain of any depth renders without recursion.

#include "keel/error/format.hpp"

#include <ostream>

namespace keel {

namespace {

bool is_leaf(const error& n) {
  return !n.cause() && n.children().empty();
}

/// "invalid_argument" for canonical codes, "shop.db.connection_lost" for others.
std::string qualified_code(const error& n) {
  if (n.category() == canonical_category_name)
    return n.code_name();
  return std::string{n.category()} + "." + n.code_name();
}

std::string leaf_text(const error& n) {
  auto s = qualified_code(n);
  if (!n.message().empty()) {
    s += ": ";
    s += n.message();
  }
  return s;
}

std::string count_text(std::size_t n) {
  return std::to_string(n) + (n == 1 ? " error" : " errors");
}

struct work {
  const error* node = nullptr; // null: emit `text`
  std::string text;
  std::size_t indent = 0;
};

std::string one_line(const error& err, const format_options& opts) {
  std::string out;
  std::vector<work> todo{{&err, {}, 0}};
  while (!todo.empty()) {
    auto w = std::move(todo.back());
    todo.pop_back();
    if (!w.node) {
      out += w.text;
      continue;
    }
    const error& n = *w.node;
    if (is_leaf(n)) {
      out += leaf_text(n);
      continue;
    }
    if (!n.message().empty()) {
      out += n.message();
      out += ": ";
    }
    // Pushed in reverse: children list first, then the cause.
    if (n.cause() && !n.children().empty())
      todo.push_back({&n.cause(), {}, 0});
    if (!n.children().empty()) {
      auto kids = n.children();
      auto shown = std::min(kids.size(), opts.max_children);
      std::vector<work> seq;
      seq.push_back({nullptr, count_text(kids.size()) + ": [", 0});
      for (std::size_t i = 0; i < shown; ++i) {
        if (i > 0)
          seq.push_back({nullptr, "; ", 0});
        seq.push_back({&kids[i], {}, 0});
      }
      if (shown < kids.size())
        seq.push_back({nullptr,
                       (shown > 0 ? "; (" : "(") + std::to_string(kids.size() - shown) + " more)",
                       0});
      seq.push_back({nullptr, n.cause() ? "]: " : "]", 0});
      for (auto i = seq.size(); i > 0; --i)
        todo.push_back(std::move(seq[i - 1]));
    } else if (n.cause()) {
      todo.push_back({&n.cause(), {}, 0});
    }
  }
  return out;
}

std::string multi_line(const error& err, const format_options& opts) {
  std::string out;
  auto line = [&out](std::size_t indent, std::string_view prefix, std::string_view text) {
    out.append(indent, ' ');
    out += prefix;
    out += text;
    out += '\n';
  };
  std::vector<work> todo{{&err, {}, 0}};
  while (!todo.empty()) {
    auto w = std::move(todo.back());
    todo.pop_back();
    if (!w.node) {
      line(w.indent, {}, w.text);
      continue;
    }
    const error& n = *w.node;
    std::string label;
    if (is_leaf(n)) {
      label = leaf_text(n);
    } else if (!n.children().empty()) {
      label = n.message().empty() ? std::string{} : std::string{n.message()} + ": ";
      label += count_text(n.children().size());
    } else {
      label = n.message().empty() ? qualified_code(n) : std::string{n.message()};
    }
    line(w.indent, w.text, label);
    auto inner = w.indent + 2;
    if (opts.details) {
      for (const auto& d : n.details()) {
        line(inner, "· ", d->to_string());
        if (opts.max_stack_frames == 0)
          continue;
        if (auto p = d->local<panic_info>()) {
          auto frames = p->stack.lines();
          auto shown = std::min(frames.size(), opts.max_stack_frames);
          for (std::size_t i = 0; i < shown; ++i)
            line(inner + 2, "at ", frames[i]);
          if (shown < frames.size())
            line(inner + 2, {}, "(" + std::to_string(frames.size() - shown) + " more frames)");
        }
      }
    }
    auto kids = n.children();
    auto shown = std::min(kids.size(), opts.max_children);
    if (shown < kids.size())
      todo.push_back({nullptr, "- (" + std::to_string(kids.size() - shown) + " more)", inner});
    for (auto i = shown; i > 0; --i)
      todo.push_back({&kids[i - 1], "- ", inner});
    if (n.cause())
      todo.push_back({&n.cause(), "caused by: ", inner});
  }
  if (!out.empty())
    out.pop_back(); // no trailing newline
  return out;
}

} // namespace

std::string format(const error& err, const format_options& opts) {
  if (!err)
    return "ok";
  return opts.multiline ? multi_line(err, opts) : one_line(err, opts);
}

std::string to_string(const error& err) {
  return format(err);
}

std::ostream& operator<<(std::ostream& os, const error& err) {
  return os << to_string(err);
}

} // namespace keel
