# Warning and sanitizer flags for rsi's own targets (not third-party code).
add_library(rsi_warnings INTERFACE)
target_compile_options(rsi_warnings INTERFACE
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor>)
if(RSI_NATIVE)
  target_compile_options(rsi_warnings INTERFACE $<$<COMPILE_LANGUAGE:CXX>:-march=native>)
endif()
if(RSI_SANITIZE)
  target_compile_options(rsi_warnings INTERFACE -fsanitize=${RSI_SANITIZE} -fno-omit-frame-pointer)
  target_link_options(rsi_warnings INTERFACE -fsanitize=${RSI_SANITIZE})
endif()
