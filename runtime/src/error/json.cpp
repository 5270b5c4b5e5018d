// JSON form of errors and of the built-in details.

#include "keel/error/json.hpp"

#include "detail/json_fields.hpp"

#include <boost/json.hpp>

#include "keel/error/detail.hpp"
#include "keel/error/expected.hpp"

namespace keel {

namespace json = boost::json;

namespace {

std::string_view kind_name(const json::value& v) {
  switch (v.kind()) {
    case json::kind::null:
      return "null";
    case json::kind::bool_:
      return "a boolean";
    case json::kind::int64:
    case json::kind::uint64:
      return "an integer";
    case json::kind::double_:
      return "a number";
    case json::kind::string:
      return "a string";
    case json::kind::array:
      return "an array";
    case json::kind::object:
      return "an object";
  }
  return "a value";
}

error bad_field(const std::string& path, std::string_view expected, const json::value& got) {
  return invalid_argument_error(path + ": expected " + std::string{expected} + ", got "
                                + std::string{kind_name(got)});
}

/// Reads an integer field in [lo, hi]; `missing` tells whether it was absent.
expected<int64_t> int_field(const json::object& o, std::string_view key, const std::string& path,
                            int64_t lo, int64_t hi, bool& missing) {
  auto it = o.find(key);
  missing = it == o.end();
  if (missing)
    return int64_t{0};
  auto range = "an integer in " + std::to_string(lo) + ".." + std::to_string(hi);
  const auto& v = it->value();
  int64_t x = 0;
  if (v.is_int64())
    x = v.get_int64();
  else if (v.is_uint64() && v.get_uint64() <= static_cast<uint64_t>(hi))
    x = static_cast<int64_t>(v.get_uint64());
  else
    return bad_field(path + "." + std::string{key}, range, v);
  if (x < lo || x > hi)
    return invalid_argument_error(path + "." + std::string{key} + ": expected " + range + ", got "
                                  + std::to_string(x));
  return x;
}

expected<std::string> string_field(const json::object& o, std::string_view key,
                                   const std::string& path, bool required) {
  auto it = o.find(key);
  if (it == o.end()) {
    if (required)
      return invalid_argument_error(path + ": missing field '" + std::string{key} + "'");
    return std::string{};
  }
  if (!it->value().is_string())
    return bad_field(path + "." + std::string{key}, "a string", it->value());
  return std::string{it->value().get_string()};
}

} // namespace

// -- writing --------------------------------------------------------------------

namespace {

json::object node_to_json(const error& n) {
  json::object o;
  o["category"] = n.category();
  o["code"] = n.code_name();
  o["value"] = n.value();
  o["canonical"] = static_cast<int>(n.code());
  o["message"] = n.message();
  if (!n.details().empty()) {
    json::array ds;
    for (const auto& d : n.details())
      ds.push_back(json::object{{"type", d->type_name()}, {"data", d->to_json()}});
    o["details"] = std::move(ds);
  }
  return o;
}

} // namespace

json::value to_json(const error& err) {
  if (!err)
    return nullptr;
  // Iterative: each stack entry is a node and the JSON slot it fills.
  json::value root;
  std::vector<std::pair<const error*, json::value*>> stack{{&err, &root}};
  while (!stack.empty()) {
    auto [n, slot] = stack.back();
    stack.pop_back();
    *slot = node_to_json(*n);
    auto& o = slot->get_object();
    if (n->cause()) {
      o["cause"] = nullptr;
      stack.emplace_back(&n->cause(), &o["cause"]);
    }
    if (!n->children().empty()) {
      auto& arr = o["errors"].emplace_array();
      arr.resize(n->children().size());
      for (std::size_t i = 0; i < arr.size(); ++i)
        stack.emplace_back(&n->children()[i], &arr[i]);
    }
  }
  return root;
}

std::string to_json_string(const error& err) {
  return json::serialize(to_json(err));
}

// -- reading --------------------------------------------------------------------

expected<error> error_from_json(const json::value& v, const json_read_options& opts) {
  if (v.is_null())
    return expected<error>{std::in_place};
  // Validate while flattening into the wire form (pre-order: node, cause,
  // children), then let the wire decoder build the tree iteratively.
  struct entry {
    const json::value* v;
    std::string path;
    std::size_t depth;
  };
  std::vector<detail::wire_node> nodes;
  std::vector<entry> stack{{&v, "error", 0}};
  while (!stack.empty()) {
    auto e = std::move(stack.back());
    stack.pop_back();
    if (e.depth > opts.max_depth)
      return invalid_argument_error(e.path + ": nested deeper than "
                                    + std::to_string(opts.max_depth) + " levels");
    if (!e.v->is_object())
      return bad_field(e.path, "an object", *e.v);
    const auto& o = e.v->get_object();
    detail::wire_node w;
    auto category = string_field(o, "category", e.path, true);
    if (!category)
      return category.error();
    if (category->empty())
      return invalid_argument_error(e.path + ".category: must not be empty");
    w.category = std::move(*category);
    bool missing = false;
    auto value = int_field(o, "value", e.path, 0, 255, missing);
    if (!value)
      return value.error();
    if (missing)
      return invalid_argument_error(e.path + ": missing field 'value'");
    w.value = static_cast<uint8_t>(*value);
    auto canonical = int_field(o, "canonical", e.path, 1, max_canonical_code, missing);
    if (!canonical)
      return canonical.error();
    bool is_keel = w.category == canonical_category_name;
    if (missing && !is_keel)
      return invalid_argument_error(e.path + ": missing field 'canonical'");
    w.canonical = missing ? w.value : static_cast<uint8_t>(*canonical);
    if (is_keel && (w.value == 0 || w.value > max_canonical_code || w.value != w.canonical))
      return invalid_argument_error(e.path + ".value: " + std::to_string(w.value)
                                    + " is not a canonical code matching 'canonical'");
    auto name = string_field(o, "code", e.path, false);
    if (!name)
      return name.error();
    if (is_keel && !name->empty() && code_from_string(*name) != static_cast<code>(w.value))
      return invalid_argument_error(e.path + ".code: '" + *name + "' does not match value "
                                    + std::to_string(w.value));
    if (!is_keel)
      w.code_name = std::move(*name);
    auto message = string_field(o, "message", e.path, false);
    if (!message)
      return message.error();
    w.message = std::move(*message);
    if (auto it = o.find("details"); it != o.end()) {
      if (!it->value().is_array())
        return bad_field(e.path + ".details", "an array", it->value());
      const auto& ds = it->value().get_array();
      for (std::size_t i = 0; i < ds.size(); ++i) {
        auto dpath = e.path + ".details[" + std::to_string(i) + "]";
        if (!ds[i].is_object())
          return bad_field(dpath, "an object", ds[i]);
        const auto& dobj = ds[i].get_object();
        auto type = string_field(dobj, "type", dpath, true);
        if (!type)
          return type.error();
        auto data = dobj.find("data");
        if (data == dobj.end())
          return invalid_argument_error(dpath + ": missing field 'data'");
        w.details.push_back({std::move(*type), json::serialize(data->value())});
      }
    }
    const json::value* cause = nullptr;
    if (auto it = o.find("cause"); it != o.end() && !it->value().is_null())
      cause = &it->value();
    const json::array* children = nullptr;
    if (auto it = o.find("errors"); it != o.end()) {
      if (!it->value().is_array())
        return bad_field(e.path + ".errors", "an array", it->value());
      children = &it->value().get_array();
      if (children->size() < 2)
        return invalid_argument_error(e.path + ".errors: a join holds at least 2 errors, got "
                                      + std::to_string(children->size()));
    }
    w.flags = static_cast<uint8_t>((cause ? 1 : 0) | (children ? 2 : 0));
    w.children = children ? static_cast<uint32_t>(children->size()) : 0;
    nodes.push_back(std::move(w));
    if (children)
      for (std::size_t i = children->size(); i > 0; --i)
        stack.push_back(
            {&(*children)[i - 1], e.path + ".errors[" + std::to_string(i - 1) + "]", e.depth + 1});
    if (cause)
      stack.push_back({cause, e.path + ".cause", e.depth + 1});
  }
  // The nodes were validated above, so the wire decoder cannot fail here.
  return expected<error>{std::in_place, detail::from_wire(nodes)};
}

expected<error> error_from_json_string(std::string_view text, const json_read_options& opts) {
  json::parse_options po;
  po.max_depth = opts.max_depth * 2 + 64; // a level nests an object and an array
  json::stream_parser parser{json::storage_ptr{}, po};
  boost::system::error_code ec;
  auto consumed = parser.write_some(text.data(), text.size(), ec);
  if (!ec && consumed < text.size())
    ec = json::error::extra_data;
  if (!ec)
    parser.finish(ec);
  if (ec)
    return invalid_argument_error("error JSON does not parse at offset " + std::to_string(consumed)
                                  + ": " + ec.message());
  return error_from_json(parser.release(), opts);
}

// -- details ----------------------------------------------------------------------

namespace {

/// A detail of a type this process does not know: its name and JSON.
class foreign_detail final : public error_detail {
public:
  foreign_detail(std::string type, json::value data)
      : type_(std::move(type)), data_(std::move(data)) {}

  std::string_view type_name() const noexcept override { return type_; }

  json::value to_json() const override { return data_; }

  std::string to_string() const override { return type_ + " " + json::serialize(data_); }

protected:
  const void* type_key() const noexcept override { return nullptr; }

  const void* value_ptr() const noexcept override { return nullptr; }

private:
  std::string type_;
  json::value data_;
};

template <class T>
std::shared_ptr<const error_detail> decode_builtin(const json::value& data) {
  auto x = detail_traits<T>::from_json(data);
  if (!x)
    return nullptr;
  return make_detail(std::move(*x));
}

const json::object* as_object(const json::value& v) {
  return v.is_object() ? &v.get_object() : nullptr;
}

} // namespace

namespace detail {

std::shared_ptr<const error_detail> make_foreign_detail(std::string type_name, json::value json) {
  // Built-in types are decoded so they render and compare as if made here; a
  // built-in that does not decode is kept as JSON rather than dropped.
  std::shared_ptr<const error_detail> d;
  if (type_name == detail_traits<stage_info>::name)
    d = decode_builtin<stage_info>(json);
  else if (type_name == detail_traits<panic_info>::name)
    d = decode_builtin<panic_info>(json);
  else if (type_name == detail_traits<public_message>::name)
    d = decode_builtin<public_message>(json);
  else if (type_name == detail_traits<std_error_info>::name)
    d = decode_builtin<std_error_info>(json);
  if (d)
    return d;
  return std::make_shared<foreign_detail>(std::move(type_name), std::move(json));
}

} // namespace detail

json::value detail_traits<stage_info>::to_json(const stage_info& x) {
  return {{"stage", x.stage}, {"item_id", x.item_id}, {"attempt", x.attempt}};
}

expected<stage_info> detail_traits<stage_info>::from_json(const json::value& v) {
  auto o = as_object(v);
  if (!o)
    return bad_field("keel.stage", "an object", v);
  stage_info x;
  auto stage = string_field(*o, "stage", "keel.stage", true);
  if (!stage)
    return stage.error();
  auto item = string_field(*o, "item_id", "keel.stage", false);
  if (!item)
    return item.error();
  bool missing = false;
  auto attempt = int_field(*o, "attempt", "keel.stage", 0, UINT32_MAX, missing);
  if (!attempt)
    return attempt.error();
  x.stage = std::move(*stage);
  x.item_id = std::move(*item);
  x.attempt = static_cast<uint32_t>(*attempt);
  return x;
}

std::string detail_traits<stage_info>::to_string(const stage_info& x) {
  std::string s = "stage " + x.stage;
  if (!x.item_id.empty())
    s += ", item " + x.item_id;
  if (x.attempt > 0)
    s += ", attempt " + std::to_string(x.attempt);
  return s;
}

json::value detail_traits<public_message>::to_json(const public_message& x) {
  return {{"text", x.text}};
}

expected<public_message> detail_traits<public_message>::from_json(const json::value& v) {
  auto o = as_object(v);
  if (!o)
    return bad_field("keel.public", "an object", v);
  auto text = string_field(*o, "text", "keel.public", true);
  if (!text)
    return text.error();
  return public_message{std::move(*text)};
}

std::string detail_traits<public_message>::to_string(const public_message& x) {
  return "public message: " + x.text;
}

json::value detail_traits<std_error_info>::to_json(const std_error_info& x) {
  return {{"category", x.category}, {"value", x.value}};
}

expected<std_error_info> detail_traits<std_error_info>::from_json(const json::value& v) {
  auto o = as_object(v);
  if (!o)
    return bad_field("keel.std_error", "an object", v);
  auto category = string_field(*o, "category", "keel.std_error", true);
  if (!category)
    return category.error();
  bool missing = false;
  auto value = int_field(*o, "value", "keel.std_error", INT32_MIN, INT32_MAX, missing);
  if (!value)
    return value.error();
  if (missing)
    return invalid_argument_error("keel.std_error: missing field 'value'");
  return std_error_info{std::move(*category), static_cast<int>(*value)};
}

std::string detail_traits<std_error_info>::to_string(const std_error_info& x) {
  return "std::error_code " + x.category + ":" + std::to_string(x.value);
}

// Shared with panic.cpp and the configuration readers (src/detail/json_fields.hpp).
namespace detail {

expected<int64_t> json_int_field(const json::object& o, std::string_view key,
                                 const std::string& path, int64_t lo, int64_t hi, bool& missing) {
  return int_field(o, key, path, lo, hi, missing);
}

expected<std::string> json_string_field(const json::object& o, std::string_view key,
                                        const std::string& path, bool required) {
  return string_field(o, key, path, required);
}

error json_bad_field(const std::string& path, std::string_view expected, const json::value& got) {
  return bad_field(path, expected, got);
}

} // namespace detail

} // namespace keel
