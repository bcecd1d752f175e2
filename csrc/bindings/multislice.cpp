// pybind11 bindings of the multislice launchers (csrc/multislice/launch.h).
#include "../common/em_common.h"
#include "../multislice/launch.h"
#include "registry.h"

namespace em {
namespace bindings {
namespace {

namespace ms = multislice;

void define(py::module_& m) {
  m.doc() = "Multislice kernels: projected potential, transmission, Fresnel propagation";
  py::class_<ms::PotentialParams>(m, "PotentialParams")
      .def(py::init<>())
      .def_readwrite("items", &ms::PotentialParams::items)
      .def_readwrite("nx", &ms::PotentialParams::nx)
      .def_readwrite("ny", &ms::PotentialParams::ny)
      .def_readwrite("species", &ms::PotentialParams::species)
      .def_readwrite("lx", &ms::PotentialParams::lx)
      .def_readwrite("ly", &ms::PotentialParams::ly)
      .def_readwrite("dtype", &ms::PotentialParams::dtype);
  py::class_<ms::TransmitParams>(m, "TransmitParams")
      .def(py::init<>())
      .def_readwrite("batch", &ms::TransmitParams::batch)
      .def_readwrite("pixels", &ms::TransmitParams::pixels)
      .def_readwrite("v_stride", &ms::TransmitParams::v_stride)
      .def_readwrite("sigma", &ms::TransmitParams::sigma)
      .def_readwrite("dtype", &ms::TransmitParams::dtype);
  py::class_<ms::PropagateParams>(m, "PropagateParams")
      .def(py::init<>())
      .def_readwrite("batch", &ms::PropagateParams::batch)
      .def_readwrite("nx", &ms::PropagateParams::nx)
      .def_readwrite("ny", &ms::PropagateParams::ny)
      .def_readwrite("dx", &ms::PropagateParams::dx)
      .def_readwrite("dy", &ms::PropagateParams::dy)
      .def_readwrite("wavelength", &ms::PropagateParams::wavelength)
      .def_readwrite("dz", &ms::PropagateParams::dz)
      .def_readwrite("kc", &ms::PropagateParams::kc)
      .def_readwrite("taper", &ms::PropagateParams::taper)
      .def_readwrite("tilt_stride", &ms::PropagateParams::tilt_stride)
      .def_readwrite("dtype", &ms::PropagateParams::dtype)
      .def_readwrite("scale", &ms::PropagateParams::scale);

  const auto gil = py::call_guard<py::gil_scoped_release>();
  m.def("structure_factor_cpu",
        [](const ms::PotentialParams& p, uintptr_t pos, uintptr_t sp, uintptr_t off, uintptr_t ff,
           uintptr_t out) {
          ms::structure_factor_cpu(p, ptr<const double>(pos), ptr<const int32_t>(sp),
                                   ptr<const int64_t>(off), ptr<const void>(ff), ptr<void>(out));
        }, gil);
  m.def("deposit_cpu",
        [](const ms::PotentialParams& p, uintptr_t pos, uintptr_t sp, uintptr_t off, uintptr_t out) {
          ms::deposit_cpu(p, ptr<const double>(pos), ptr<const int32_t>(sp),
                          ptr<const int64_t>(off), ptr<void>(out));
        }, gil);
  m.def("transmit_cpu", [](const ms::TransmitParams& p, uintptr_t v, uintptr_t w) {
    ms::transmit_cpu(p, ptr<const void>(v), ptr<void>(w));
  }, gil);
  m.def("transmission_cpu", [](const ms::TransmitParams& p, uintptr_t v, uintptr_t out) {
    ms::transmission_cpu(p, ptr<const void>(v), ptr<void>(out));
  }, gil);
  m.def("propagate_cpu", [](const ms::PropagateParams& p, uintptr_t tilt, uintptr_t w) {
    ms::propagate_cpu(p, ptr<const double>(tilt), ptr<void>(w));
  }, gil);

  m.def("structure_factor_cuda",
        [](const ms::PotentialParams& p, uintptr_t pos, uintptr_t sp, uintptr_t off, uintptr_t ff,
           uintptr_t out, uintptr_t s) {
#if EM_ACCEL_WITH_CUDA
          ms::structure_factor_cuda(p, ptr<const double>(pos), ptr<const int32_t>(sp),
                                    ptr<const int64_t>(off), ptr<const void>(ff), ptr<void>(out),
                                    stream(s));
#else
          no_cuda("multislice.structure_factor_cuda");
#endif
        }, gil);
  m.def("deposit_cuda",
        [](const ms::PotentialParams& p, uintptr_t pos, uintptr_t sp, uintptr_t off, uintptr_t out,
           uintptr_t s) {
#if EM_ACCEL_WITH_CUDA
          ms::deposit_cuda(p, ptr<const double>(pos), ptr<const int32_t>(sp),
                           ptr<const int64_t>(off), ptr<void>(out), stream(s));
#else
          no_cuda("multislice.deposit_cuda");
#endif
        }, gil);
  m.def("transmit_cuda", [](const ms::TransmitParams& p, uintptr_t v, uintptr_t w, uintptr_t s) {
#if EM_ACCEL_WITH_CUDA
    ms::transmit_cuda(p, ptr<const void>(v), ptr<void>(w), stream(s));
#else
    no_cuda("multislice.transmit_cuda");
#endif
  }, gil);
  m.def("transmission_cuda", [](const ms::TransmitParams& p, uintptr_t v, uintptr_t o, uintptr_t s) {
#if EM_ACCEL_WITH_CUDA
    ms::transmission_cuda(p, ptr<const void>(v), ptr<void>(o), stream(s));
#else
    no_cuda("multislice.transmission_cuda");
#endif
  }, gil);
  m.def("propagate_cuda", [](const ms::PropagateParams& p, uintptr_t tilt, uintptr_t w, uintptr_t s) {
#if EM_ACCEL_WITH_CUDA
    ms::propagate_cuda(p, ptr<const double>(tilt), ptr<void>(w), stream(s));
#else
    no_cuda("multislice.propagate_cuda");
#endif
  }, gil);
}

const Register registered("multislice", define);

}  // namespace
}  // namespace bindings
}  // namespace em
