// pybind11 bindings of the ALRC launchers (csrc/alrc/launch.h).
#include "../alrc/alrc.h"
#include "../alrc/launch.h"
#include "../common/em_common.h"
#include "registry.h"

namespace em {
namespace bindings {
namespace {

using alrc::Params;
using py::arg;

void define(py::module_& m) {
  m.doc() = "Fused adaptive learning rate clipping (ALRC) losses";
  py::class_<Params>(m, "Params")
      .def(py::init<>())
      .def_readwrite("batch", &Params::batch)
      .def_readwrite("elems", &Params::elems)
      .def_readwrite("kind", &Params::kind)
      .def_readwrite("per_pixel", &Params::per_pixel)
      .def_readwrite("dtype", &Params::dtype)
      .def_readwrite("n_up", &Params::n_up)
      .def_readwrite("n_down", &Params::n_down)
      .def_readwrite("decay", &Params::decay);
  py::enum_<alrc::ErrorKind>(m, "ErrorKind")
      .value("SQUARED", alrc::ErrorKind::Squared)
      .value("ABSOLUTE", alrc::ErrorKind::Absolute)
      .value("QUARTIC", alrc::ErrorKind::Quartic);
  m.def("workspace_doubles", &alrc::workspace_doubles, arg("p"));
  m.def(
      "forward_cpu",
      [](const Params& p, uintptr_t pred, uintptr_t target, uintptr_t mu1, uintptr_t mu2,
         uintptr_t loss, uintptr_t scale, uintptr_t mu1_out, uintptr_t mu2_out) {
        alrc::forward_cpu(p, ptr<const void>(pred), ptr<const void>(target), ptr<const float>(mu1),
                          ptr<const float>(mu2), ptr<void>(loss), ptr<void>(scale),
                          ptr<float>(mu1_out), ptr<float>(mu2_out));
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "backward_cpu",
      [](const Params& p, uintptr_t grad_loss, uintptr_t pred, uintptr_t target, uintptr_t scale,
         uintptr_t grad_pred) {
        alrc::backward_cpu(p, ptr<const void>(grad_loss), ptr<const void>(pred),
                           ptr<const void>(target), ptr<const void>(scale), ptr<void>(grad_pred));
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "forward_cuda",
      [](const Params& p, uintptr_t pred, uintptr_t target, uintptr_t mu1, uintptr_t mu2,
         uintptr_t loss, uintptr_t scale, uintptr_t mu1_out, uintptr_t mu2_out,
         uintptr_t workspace, uintptr_t stream_handle) {
#if EM_ACCEL_WITH_CUDA
        alrc::forward_cuda(p, ptr<const void>(pred), ptr<const void>(target),
                           ptr<const float>(mu1), ptr<const float>(mu2), ptr<void>(loss),
                           ptr<void>(scale), ptr<float>(mu1_out), ptr<float>(mu2_out),
                           ptr<double>(workspace), stream(stream_handle));
#else
        no_cuda("alrc.forward_cuda");
#endif
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "backward_cuda",
      [](const Params& p, uintptr_t grad_loss, uintptr_t pred, uintptr_t target, uintptr_t scale,
         uintptr_t grad_pred, uintptr_t stream_handle) {
#if EM_ACCEL_WITH_CUDA
        alrc::backward_cuda(p, ptr<const void>(grad_loss), ptr<const void>(pred),
                            ptr<const void>(target), ptr<const void>(scale), ptr<void>(grad_pred),
                            stream(stream_handle));
#else
        no_cuda("alrc.backward_cuda");
#endif
      },
      py::call_guard<py::gil_scoped_release>());
}

const Register registered("alrc", define);

}  // namespace
}  // namespace bindings
}  // namespace em
