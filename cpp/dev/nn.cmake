# The nn kernels' harness (cpp/dev/nn_harness.cpp): include(nn.cmake) from
# cpp/dev/CMakeLists.txt after fg_dev_harness is defined.
file(GLOB FG_DEV_NN_SOURCES ${FG_CPP}/cpu/norm*.cpp ${FG_CPP}/cpu/activation*.cpp ${FG_CPP}/cpu/softmax*.cpp
  ${FG_CPP}/cpu/loss*.cpp ${FG_CPP}/cpu/dropout*.cpp)
fg_dev_harness(dev_nn ${CMAKE_CURRENT_SOURCE_DIR}/nn_harness.cpp ${FG_DEV_NN_SOURCES}
  ${FG_CPP}/cpu/isa.cpp ${FG_CPP}/pool.cpp)
