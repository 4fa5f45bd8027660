# The attention harness (cpp/dev/attention_harness.cpp): include(attention.cmake) from
# cpp/dev/CMakeLists.txt after fg_dev_harness is defined. Needs the matmul sources for the
# standard path it validates against.
file(GLOB FG_DEV_ATTENTION_SOURCES ${FG_CPP}/cpu/attention*.cpp ${FG_CPP}/cpu/matmul*.cpp ${FG_CPP}/cpu/activation*.cpp)
fg_dev_harness(dev_attention ${CMAKE_CURRENT_SOURCE_DIR}/attention_harness.cpp ${FG_DEV_ATTENTION_SOURCES}
  ${FG_CPP}/cpu/isa.cpp ${FG_CPP}/pool.cpp)
