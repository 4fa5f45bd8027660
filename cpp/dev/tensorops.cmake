# The tensorops harness (cpp/dev/tensorops_harness.cpp): included from cpp/dev/CMakeLists.txt
# after fg_dev_harness is defined.
file(GLOB FG_DEV_TENSOROPS_SOURCES ${FG_CPP}/cpu/optim*.cpp ${FG_CPP}/cpu/reduce*.cpp)
fg_dev_harness(dev_tensorops ${CMAKE_CURRENT_SOURCE_DIR}/tensorops_harness.cpp ${FG_DEV_TENSOROPS_SOURCES}
  ${FG_CPP}/cpu/elementwise.cpp ${FG_CPP}/cpu/layout.cpp ${FG_CPP}/cpu/isa.cpp ${FG_CPP}/pool.cpp)
# GCC 12 warns inside its own AVX-512 intrinsic headers (maybe-uninitialized on
# _mm512_undefined_*, a false positive); keep the harness build readable.
file(GLOB FG_DEV_TENSOROPS_AVX512 ${FG_CPP}/cpu/optim_avx512.cpp ${FG_CPP}/cpu/reduce_avx512.cpp)
set_property(SOURCE ${FG_DEV_TENSOROPS_AVX512} APPEND PROPERTY COMPILE_OPTIONS -Wno-maybe-uninitialized)
