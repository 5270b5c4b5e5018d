#include <keel/error.hpp>

int main() {
  keel::error e = keel::make_error(keel::code::unavailable, "db down");
  return keel::is(e, keel::code::unavailable) ? 0 : 1;
}
