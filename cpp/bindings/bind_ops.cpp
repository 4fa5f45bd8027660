// Norm, activation, loss, embedding, optimizer and elementwise ops.
#include "bindings/bindings.h"

namespace femtogpt::bindings {

void register_ops(py::module_& m) { (void)m; }

}  // namespace femtogpt::bindings
