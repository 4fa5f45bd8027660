#include "bindings/bindings.h"

namespace femtogpt::bindings {

void register_nn(py::module_& m) { (void)m; }

}  // namespace femtogpt::bindings
