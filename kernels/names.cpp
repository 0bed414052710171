// Names of the kernels' enums, apart from the kernels themselves: the manifest and genome readers
// (and tests/fuzz, which compiles them alone) need the names without the CPU code.
#include "rsi/kernels/ops.h"

namespace rsi::kernels {

const char* activation_name(Activation a) {
  switch (a) {
    case Activation::ReLU: return "relu";
    case Activation::GELU: return "gelu";
    case Activation::Tanh: return "tanh";
  }
  return "?";
}

}  // namespace rsi::kernels
