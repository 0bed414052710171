# Warning and sanitizer flags for rsi's own targets (not third-party code).
add_library(rsi_warnings INTERFACE)
target_compile_options(rsi_warnings INTERFACE
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor>)
# No fused multiply-add contraction: -march=native on an FMA machine would otherwise let GCC fuse
# a*b+c wherever it sees one (GCC contracts by default in C++), so the same source would round
# differently on CPUs with and without FMA, and the bits would follow the compiler's choices rather
# than the source. FMAs we want are written as such (kernels/cpu/gemm.cpp). Part of the
# portable-determinism contract (kernels/README.md).
target_compile_options(rsi_warnings INTERFACE $<$<COMPILE_LANGUAGE:CXX>:-ffp-contract=off>)
if(RSI_NATIVE)
  target_compile_options(rsi_warnings INTERFACE $<$<COMPILE_LANGUAGE:CXX>:-march=native>)
endif()
if(RSI_SANITIZE)
  target_compile_options(rsi_warnings INTERFACE -fsanitize=${RSI_SANITIZE} -fno-omit-frame-pointer)
  target_link_options(rsi_warnings INTERFACE -fsanitize=${RSI_SANITIZE})
endif()
