#include "bindings/bindings.h"

namespace femtogpt::bindings {

void register_tensorops(py::module_& m) { (void)m; }

}  // namespace femtogpt::bindings
