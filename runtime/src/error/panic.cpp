// Exceptions to panic errors, and stack traces.

#ifndef BOOST_STACKTRACE_LINK
#define BOOST_STACKTRACE_LINK
#endif

#include "keel/error/panic.hpp"

#include <cxxabi.h>

#include <cstdio>
#include <typeinfo>

#include <boost/json.hpp>
#include <boost/stacktrace.hpp>

#include "keel/error/expected.hpp"

#include "detail/json_fields.hpp"

namespace keel {

namespace json = boost::json;

// -- stack_trace ------------------------------------------------------------------

stack_trace stack_trace::capture(std::size_t skip, std::size_t max_depth) {
  stack_trace result;
  // +1 skips this function's own frame.
  boost::stacktrace::stacktrace st(skip + 1, max_depth);
  result.frames_.reserve(st.size());
  for (const auto& f : st)
    result.frames_.push_back(const_cast<void*>(static_cast<const void*>(f.address())));
  return result;
}

stack_trace stack_trace::from_lines(std::vector<std::string> lines) {
  stack_trace result;
  result.lines_ = std::move(lines);
  return result;
}

std::vector<std::string> stack_trace::lines() const {
  if (frames_.empty())
    return lines_;
  std::vector<std::string> result;
  result.reserve(frames_.size());
  for (void* addr : frames_) {
    boost::stacktrace::frame f{
        reinterpret_cast<boost::stacktrace::frame::native_frame_ptr_t>(addr)};
    auto line = f.name();
    if (line.empty()) {
      char buf[32];
      std::snprintf(buf, sizeof(buf), "%p", addr);
      line = buf;
    }
    if (auto file = f.source_file(); !file.empty())
      line += " at " + file + ":" + std::to_string(f.source_line());
    result.push_back(std::move(line));
  }
  return result;
}

// -- panic_info details -------------------------------------------------------------

namespace {

std::string_view site_name(capture_site s) {
  switch (s) {
    case capture_site::throw_site:
      return "throw_site";
    case capture_site::catch_site:
      return "catch_site";
    case capture_site::none:
      break;
  }
  return "none";
}

} // namespace

json::value detail_traits<panic_info>::to_json(const panic_info& x) {
  json::array stack;
  for (auto& line : x.stack.lines())
    stack.emplace_back(line);
  return {{"type", x.exception_type},
          {"what", x.what},
          {"site", site_name(x.site)},
          {"stack", std::move(stack)}};
}

expected<panic_info> detail_traits<panic_info>::from_json(const json::value& v) {
  const std::string path = "keel.panic";
  if (!v.is_object())
    return detail::json_bad_field(path, "an object", v);
  const auto& o = v.get_object();
  auto type = detail::json_string_field(o, "type", path, true);
  if (!type)
    return type.error();
  auto what = detail::json_string_field(o, "what", path, false);
  if (!what)
    return what.error();
  auto site = detail::json_string_field(o, "site", path, false);
  if (!site)
    return site.error();
  panic_info x;
  x.exception_type = std::move(*type);
  x.what = std::move(*what);
  if (*site == "throw_site")
    x.site = capture_site::throw_site;
  else if (*site == "catch_site")
    x.site = capture_site::catch_site;
  else if (site->empty() || *site == "none")
    x.site = capture_site::none;
  else
    return invalid_argument_error(path + ".site: unknown capture site '" + *site + "'");
  if (auto it = o.find("stack"); it != o.end()) {
    if (!it->value().is_array())
      return detail::json_bad_field(path + ".stack", "an array", it->value());
    std::vector<std::string> lines;
    const auto& arr = it->value().get_array();
    for (std::size_t i = 0; i < arr.size(); ++i) {
      if (!arr[i].is_string())
        return detail::json_bad_field(path + ".stack[" + std::to_string(i) + "]", "a string",
                                      arr[i]);
      lines.emplace_back(arr[i].get_string());
    }
    x.stack = stack_trace::from_lines(std::move(lines));
  }
  return x;
}

std::string detail_traits<panic_info>::to_string(const panic_info& x) {
  std::string s = "panic " + x.exception_type;
  if (!x.what.empty())
    s += ": " + x.what;
  if (!x.stack.empty())
    s += " (stack of " + std::to_string(x.stack.size()) + " frames at the "
         + (x.site == capture_site::throw_site ? "throw" : "catch") + " site)";
  return s;
}

// -- make_panic_error ---------------------------------------------------------------

error make_panic_error(std::exception_ptr ep) {
  if (!ep)
    return {};
  panic_info info;
  try {
    std::rethrow_exception(ep);
  } catch (const traced_exception_base& t) {
    info.exception_type = demangle(t.thrown_type().name());
    if (auto e = dynamic_cast<const std::exception*>(&t))
      info.what = e->what();
    info.stack = t.trace();
    info.site = capture_site::throw_site;
  } catch (const std::exception& e) {
    info.exception_type = demangle(typeid(e).name());
    info.what = e.what();
  } catch (const char* s) {
    info.exception_type = "const char*";
    info.what = s != nullptr ? s : "";
  } catch (const std::string& s) {
    info.exception_type = "std::string";
    info.what = s;
  } catch (...) {
    auto* t = abi::__cxa_current_exception_type();
    info.exception_type = t != nullptr ? demangle(t->name()) : "unknown exception type";
  }
  if (info.site == capture_site::none) {
    // Skip this frame: the trace starts at whoever converts the exception.
    info.stack = stack_trace::capture(1);
    info.site = capture_site::catch_site;
  }
  std::string message = info.exception_type;
  if (!info.what.empty())
    message += ": " + info.what;
  return with_detail(panic_error(std::move(message)), std::move(info));
}

} // namespace keel
