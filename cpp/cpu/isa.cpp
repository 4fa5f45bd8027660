#include "cpu/isa.h"

#include <algorithm>
#include <atomic>

#include "common.h"

namespace femtogpt::cpu {

namespace {

bool cpu_has_avx2() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return false;
#endif
}

bool cpu_has_avx512() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
#else
    return false;
#endif
}

std::atomic<int> g_active{-1};

}  // namespace

const char* isa_name(Isa isa) {
    switch (isa) {
        case Isa::generic: return "generic";
        case Isa::avx2: return "avx2";
        case Isa::avx512: return "avx512";
    }
    return "unknown";
}

Isa parse_isa(const std::string& name) {
    if (name == "generic") return Isa::generic;
    if (name == "avx2") return Isa::avx2;
    if (name == "avx512") return Isa::avx512;
    throw ValueError(fmt("unknown ISA '", name, "': expected one of generic, avx2, avx512"));
}

std::vector<Isa> available_isas() {
    std::vector<Isa> out{Isa::generic};
    if (cpu_has_avx2()) out.push_back(Isa::avx2);
    if (cpu_has_avx512()) out.push_back(Isa::avx512);
    return out;
}

Isa best_isa() { return available_isas().back(); }

Isa active_isa() {
    int v = g_active.load(std::memory_order_relaxed);
    if (v < 0) {
        v = int(best_isa());
        g_active.store(v, std::memory_order_relaxed);
    }
    return Isa(v);
}

void set_active_isa(Isa isa) {
    auto avail = available_isas();
    if (std::find(avail.begin(), avail.end(), isa) == avail.end()) {
        std::string have;
        for (Isa a : avail) have += std::string(have.empty() ? "" : ", ") + isa_name(a);
        throw ValueError(fmt("ISA '", isa_name(isa), "' is not supported by this CPU; available: ", have));
    }
    g_active.store(int(isa), std::memory_order_relaxed);
}

}  // namespace femtogpt::cpu
