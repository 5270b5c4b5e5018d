/// @file
/// Forward declarations of the keel error model.
#pragma once

#include <cstdint>

namespace keel {

enum class code : uint8_t;
enum class retry_advice : uint8_t;
class error;
class error_category;
class error_detail;
class error_builder;
template <class T>
class expected;
class error_buffer;
class error_summary;
class error_sample;
struct stage_info;
struct panic_info;
struct public_message;
struct std_error_info;
struct format_options;
struct public_status;

} // namespace keel
