// Shared definitions of the C++ core: error types and checks.
//
// The bindings translate these exceptions to Python: ValueError, TypeError,
// IndexError and MemoryError (std::bad_alloc). Every check's message says what
// was wrong and what was expected, because it is what a Python user reads.
#pragma once

#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <type_traits>

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

// The pieces of an error message, as text. Numbers are written by std::to_string and snprintf,
// not by an ostream: an ostream formats numbers through the global C++ locale, and in a process
// where the locale was made by another copy of libstdc++ (a toolchain that links it statically,
// beside numpy's shared one) that crashed (seen on a build with /opt/gcc's g++: every message
// with a number in it segfaulted). A global C++ locale set by another library no longer changes
// the digits (1.000 for 1000); floating point still follows the C locale's LC_NUMERIC, as Python
// leaves it ("C") unless a program calls locale.setlocale.
namespace detail {
inline void append(std::string& s, const std::string& x) { s += x; }
inline void append(std::string& s, const char* x) { s += x ? x : "(null)"; }  // no caller passes null today
inline void append(std::string& s, char x) { s += x; }
inline void append(std::string& s, bool x) { s += x ? "1" : "0"; }  // as an ostream writes it
template <typename T>
std::enable_if_t<std::is_integral_v<T>> append(std::string& s, T x) {
    s += std::to_string(x);
}
inline void append(std::string& s, double x) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", x);  // an ostream's default: 6 significant digits
    s += buf;
}
inline void append(std::string& s, float x) { append(s, double(x)); }
}  // namespace detail

// Builds a message from its pieces (text and numbers): fmt("bad size ", n, " for ", name).
template <typename... Args>
std::string fmt(const Args&... args) {
    std::string s;
    (detail::append(s, args), ...);
    return s;
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
