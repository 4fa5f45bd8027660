// Attention: standard (reference) and flash.
#include "bindings/bindings.h"

namespace femtogpt::bindings {

void register_attention(py::module_& m) { (void)m; }

}  // namespace femtogpt::bindings
