// Shared definitions of the C++ core: error types and checks.
//
// The bindings translate these exceptions to Python: ValueError, TypeError,
// IndexError and MemoryError (std::bad_alloc). Every check's message says what
// was wrong and what was expected, because it is what a Python user reads.
#pragma once

#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>

namespace femtogpt {

struct ValueError : std::invalid_argument {
    using std::invalid_argument::invalid_argument;
};
struct TypeError : std::runtime_error {
    using std::runtime_error::runtime_error;
};
struct IndexError : std::out_of_range {
    using std::out_of_range::out_of_range;
};

// Builds a message from any streamable pieces: fmt("bad size ", n, " for ", name).
template <typename... Args>
std::string fmt(const Args&... args) {
    std::ostringstream os;
    (os << ... << args);
    return os.str();
}

}  // namespace femtogpt

// FG_CHECK(cond, pieces...) throws ValueError with the pieces as message.
#define FG_CHECK(cond, ...)                                              \
    do {                                                                 \
        if (!(cond)) throw ::femtogpt::ValueError(::femtogpt::fmt(__VA_ARGS__)); \
    } while (0)
#define FG_CHECK_TYPE(cond, ...)                                         \
    do {                                                                 \
        if (!(cond)) throw ::femtogpt::TypeError(::femtogpt::fmt(__VA_ARGS__)); \
    } while (0)
