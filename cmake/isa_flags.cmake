# Per-file ISA flags: a source ending in _avx2.cpp or _avx512.cpp holds intrinsics
# for that ISA and alone is compiled for it; everything else stays baseline x86-64
# (never -march=native) and the kernels are chosen at run time. Source properties
# are per directory, so each CMakeLists that compiles kernels calls this itself.
function(fg_isa_flags)
  foreach(src ${ARGN})
    if(src MATCHES "_avx512\\.cpp$")
      set_source_files_properties(${src} PROPERTIES COMPILE_OPTIONS
        "-mavx512f;-mavx512dq;-mavx512bw;-mavx512vl;-mavx2;-mfma;-mf16c")
    elseif(src MATCHES "_avx2\\.cpp$")
      set_source_files_properties(${src} PROPERTIES COMPILE_OPTIONS "-mavx2;-mfma;-mf16c")
    endif()
  endforeach()
endfunction()
