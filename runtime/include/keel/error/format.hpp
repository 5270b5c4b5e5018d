/// @file
/// Rendering errors for people: one line for logs and messages, a tree for
/// reports.
///
/// One-line form, Go style: wraps are joined with ": ", a leaf shows its code
/// name and message, a join shows how many errors it holds and lists them:
/// @code
///   stage parse: invalid_argument: bad date
///   3 errors: [parse row 7: invalid_argument: bad date; ...; (1 more)]
/// @endcode
/// The multi-line form indents causes and children and shows details
/// (stage attribution, panic type and stack). Joins longer than
/// `max_children` are truncated with a "(N more)" line, so a run with a
/// million failed items still prints a readable error.
#pragma once

#include <cstddef>
#include <iosfwd>
#include <string>

#include "keel/error/error.hpp"

namespace keel {

/// How `format` renders an error.
struct format_options {
  /// One line, or an indented tree.
  bool multiline = false;
  /// Children of a join shown before "(N more)".
  std::size_t max_children = 10;
  /// Show details (stage, panic, user types). Multi-line form only.
  bool details = true;
  /// Stack frames shown per panic (0: none). Multi-line form only.
  std::size_t max_stack_frames = 16;
};

/// Renders `err` as `opts` say; "ok" for an empty error.
std::string format(const error& err, const format_options& opts = {});

/// The one-line form with default options.
std::string to_string(const error& err);

/// Writes the one-line form (also what GoogleTest prints).
std::ostream& operator<<(std::ostream& os, const error& err);

} // namespace keel
