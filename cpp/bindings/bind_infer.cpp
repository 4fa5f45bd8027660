#include "bindings/bindings.h"

namespace femtogpt::bindings {

void register_infer(py::module_& m) { (void)m; }

}  // namespace femtogpt::bindings
