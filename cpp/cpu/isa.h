// Run-time choice of the SIMD kernel family.
//
// The wheel is built for a baseline x86-64 (never -march=native); files with
// AVX2 or AVX-512 intrinsics are compiled with per-file flags, and the family
// used is picked here at run time from what the CPU reports. FEMTOGPT_ISA
// (generic | avx2 | avx512) forces one, for tests; naming one the CPU lacks is
// a ValueError.
#pragma once

#include <string>
#include <vector>

namespace femtogpt::cpu {

enum class Isa { generic = 0, avx2 = 1, avx512 = 2 };

const char* isa_name(Isa isa);
Isa parse_isa(const std::string& name);  // throws ValueError for an unknown name

std::vector<Isa> available_isas();       // what this CPU can run, generic first
Isa best_isa();                          // the widest available
Isa active_isa();                        // the one kernels use now
void set_active_isa(Isa isa);            // throws ValueError if the CPU lacks it

}  // namespace femtogpt::cpu
