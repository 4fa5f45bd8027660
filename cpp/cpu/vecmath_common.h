// Scalar constants shared by the vecmath_avx2.h and vecmath_avx512.h helpers (no intrinsics:
// safe to include from any file).
#pragma once

namespace femtogpt::cpu::vecmath {

// ln2^k / k!, computed in double: the degree-6 Taylor coefficients of 2^f = exp(f ln2) that both
// ISAs' exp2_ps evaluate for |f| <= 1/2 (truncation < 1.2e-7 relative).
constexpr float exp2_taylor(int k) {
    double v = 1;
    for (int i = 1; i <= k; i++) v *= 0.6931471805599453 / i;
    return float(v);
}
inline constexpr float kExp2Taylor[7] = {exp2_taylor(0), exp2_taylor(1), exp2_taylor(2), exp2_taylor(3),
                                         exp2_taylor(4), exp2_taylor(5), exp2_taylor(6)};

}  // namespace femtogpt::cpu::vecmath
