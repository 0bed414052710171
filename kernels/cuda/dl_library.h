// dlopen helpers shared by the loaders of the CUDA libraries rsi does not link (cuBLAS, cuDNN):
// open one by soname, bind its entry points, and fail with an error that names the library, the
// dlerror() text and what to do.
#pragma once

#include <dlfcn.h>

#include <mutex>
#include <stdexcept>
#include <string>

namespace rsi::kernels::cuda {

// dlopen(name, RTLD_NOW | RTLD_LOCAL), kept open for the life of the process; throws
// "cannot load <what> (<name>): <dlerror>; <advice>".
inline void* open_library(const std::string& name, const std::string& what, const std::string& advice) {
  void* library = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!library) {
    const char* why = dlerror();
    throw std::runtime_error("cannot load " + what + " (" + name + "): " + (why ? why : "unknown dlopen error") +
                             "; " + advice);
  }
  return library;
}

// fn = the address of `symbol` in `library` (opened as `name`); throws naming both when it is missing.
template <typename Fn>
void bind_symbol(void* library, const std::string& name, const char* symbol, Fn& fn) {
  void* p = dlsym(library, symbol);
  if (!p) throw std::runtime_error(std::string("symbol ") + symbol + " not found in " + name);
  fn = reinterpret_cast<Fn>(p);
}

// Runs `load` once per process (thread-safe); if it threw, its message is kept and thrown again
// (std::runtime_error) by this and every later call, so each caller gets the same clear reason.
template <typename Load>
void load_once(std::once_flag& once, std::string& error, Load load) {
  std::call_once(once, [&] {
    try {
      load();
    } catch (const std::exception& e) {
      error = e.what();
    }
  });
  if (!error.empty()) throw std::runtime_error(error);
}

}  // namespace rsi::kernels::cuda
