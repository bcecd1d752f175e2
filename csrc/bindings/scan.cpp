// pybind11 bindings of the scan launchers (csrc/scan/launch.h).
#include "../common/em_common.h"
#include "../scan/launch.h"
#include "../scan/scan.h"
#include "registry.h"

namespace em {
namespace bindings {
namespace {

using py::arg;
using scan::RasterParams;
using scan::SampleParams;
using scan::SegmentParams;

void define(py::module_& m) {
  m.doc() = "Scan-path sampling and rasterisation with nearest-neighbour infill";
  py::class_<SampleParams>(m, "SampleParams")
      .def(py::init<>())
      .def_readwrite("batch", &SampleParams::batch)
      .def_readwrite("height", &SampleParams::height)
      .def_readwrite("width", &SampleParams::width)
      .def_readwrite("probes", &SampleParams::probes)
      .def_readwrite("mode", &SampleParams::mode)
      .def_readwrite("dtype", &SampleParams::dtype)
      .def_readwrite("seed", &SampleParams::seed)
      .def_readwrite("dose", &SampleParams::dose)
      .def_readwrite("read_noise", &SampleParams::read_noise);
  py::class_<RasterParams>(m, "RasterParams")
      .def(py::init<>())
      .def_readwrite("batch", &RasterParams::batch)
      .def_readwrite("height", &RasterParams::height)
      .def_readwrite("width", &RasterParams::width)
      .def_readwrite("probes", &RasterParams::probes)
      .def_readwrite("dtype", &RasterParams::dtype);
  py::class_<SegmentParams>(m, "SegmentParams")
      .def(py::init<>())
      .def_readwrite("batch", &SegmentParams::batch)
      .def_readwrite("height", &SegmentParams::height)
      .def_readwrite("width", &SegmentParams::width)
      .def_readwrite("probes", &SegmentParams::probes)
      .def_readwrite("episode_probes", &SegmentParams::episode_probes)
      .def_readwrite("offset", &SegmentParams::offset)
      .def_readwrite("mode", &SegmentParams::mode)
      .def_readwrite("dtype", &SegmentParams::dtype)
      .def_readwrite("vector_actions", &SegmentParams::vector_actions)
      .def_readwrite("seed", &SegmentParams::seed)
      .def_readwrite("dose", &SegmentParams::dose)
      .def_readwrite("read_noise", &SegmentParams::read_noise)
      .def_readwrite("step", &SegmentParams::step)
      .def_readwrite("edge_penalty", &SegmentParams::edge_penalty);
  py::enum_<scan::Mode>(m, "Mode")
      .value("NEAREST", scan::Mode::Nearest)
      .value("BILINEAR", scan::Mode::Bilinear);
  // The counter-based generator, exposed so tests can check its statistics and reproducibility.
  m.def("uniform", &scan::uniform, arg("seed"), arg("index"), arg("counter"));
  m.def("poisson", &scan::poisson, arg("lam"), arg("seed"), arg("index"), arg("counter"));

  m.def(
      "sample_cpu",
      [](const SampleParams& p, uintptr_t images, uintptr_t positions, uintptr_t values) {
        scan::sample_cpu(p, ptr<const void>(images), ptr<const void>(positions), ptr<void>(values));
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "sample_backward_cpu",
      [](const SampleParams& p, uintptr_t grad_values, uintptr_t images, uintptr_t positions,
         uintptr_t grad_images, uintptr_t grad_positions) {
        scan::sample_backward_cpu(p, ptr<const void>(grad_values), ptr<const void>(images),
                                  ptr<const void>(positions), ptr<void>(grad_images),
                                  ptr<void>(grad_positions));
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "rasterize_cpu",
      [](const RasterParams& p, uintptr_t values, uintptr_t positions, uintptr_t image,
         uintptr_t counts, uintptr_t infilled, uintptr_t source, uintptr_t nearest,
         uintptr_t envelope_v, uintptr_t envelope_z) {
        scan::rasterize_cpu(p, ptr<const void>(values), ptr<const void>(positions),
                            ptr<void>(image), ptr<void>(counts), ptr<void>(infilled),
                            ptr<int64_t>(source), ptr<int32_t>(nearest), ptr<int32_t>(envelope_v),
                            ptr<double>(envelope_z));
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "rasterize_backward_cpu",
      [](const RasterParams& p, uintptr_t grad_image, uintptr_t grad_infilled,
         uintptr_t positions, uintptr_t counts, uintptr_t source, uintptr_t pixel_grad,
         uintptr_t grad_values) {
        scan::rasterize_backward_cpu(p, ptr<const void>(grad_image),
                                     ptr<const void>(grad_infilled), ptr<const void>(positions),
                                     ptr<const void>(counts), ptr<const int64_t>(source),
                                     ptr<void>(pixel_grad), ptr<void>(grad_values));
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "sample_cuda",
      [](const SampleParams& p, uintptr_t images, uintptr_t positions, uintptr_t values,
         uintptr_t stream_handle) {
#if EM_ACCEL_WITH_CUDA
        scan::sample_cuda(p, ptr<const void>(images), ptr<const void>(positions),
                          ptr<void>(values), stream(stream_handle));
#else
        no_cuda("scan.sample_cuda");
#endif
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "sample_backward_cuda",
      [](const SampleParams& p, uintptr_t grad_values, uintptr_t images, uintptr_t positions,
         uintptr_t grad_images, uintptr_t grad_positions, uintptr_t stream_handle) {
#if EM_ACCEL_WITH_CUDA
        scan::sample_backward_cuda(p, ptr<const void>(grad_values), ptr<const void>(images),
                                   ptr<const void>(positions), ptr<void>(grad_images),
                                   ptr<void>(grad_positions), stream(stream_handle));
#else
        no_cuda("scan.sample_backward_cuda");
#endif
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "rasterize_cuda",
      [](const RasterParams& p, uintptr_t values, uintptr_t positions, uintptr_t image,
         uintptr_t counts, uintptr_t infilled, uintptr_t source, uintptr_t nearest,
         uintptr_t envelope_v, uintptr_t envelope_z, uintptr_t stream_handle) {
#if EM_ACCEL_WITH_CUDA
        scan::rasterize_cuda(p, ptr<const void>(values), ptr<const void>(positions),
                             ptr<void>(image), ptr<void>(counts), ptr<void>(infilled),
                             ptr<int64_t>(source), ptr<int32_t>(nearest),
                             ptr<int32_t>(envelope_v), ptr<double>(envelope_z),
                             stream(stream_handle));
#else
        no_cuda("scan.rasterize_cuda");
#endif
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "rasterize_backward_cuda",
      [](const RasterParams& p, uintptr_t grad_image, uintptr_t grad_infilled,
         uintptr_t positions, uintptr_t counts, uintptr_t source, uintptr_t pixel_grad,
         uintptr_t grad_values, uintptr_t stream_handle) {
#if EM_ACCEL_WITH_CUDA
        scan::rasterize_backward_cuda(p, ptr<const void>(grad_image),
                                      ptr<const void>(grad_infilled), ptr<const void>(positions),
                                      ptr<const void>(counts), ptr<const int64_t>(source),
                                      ptr<void>(pixel_grad), ptr<void>(grad_values),
                                      stream(stream_handle));
#else
        no_cuda("scan.rasterize_backward_cuda");
#endif
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "segment_cpu",
      [](const SegmentParams& p, uintptr_t images, uintptr_t start, uintptr_t actions,
         uintptr_t positions, uintptr_t values, uintptr_t end, uintptr_t penalty) {
        scan::segment_cpu(p, ptr<const void>(images), ptr<const void>(start),
                          ptr<const void>(actions), ptr<void>(positions), ptr<void>(values),
                          ptr<void>(end), ptr<void>(penalty));
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "segment_cuda",
      [](const SegmentParams& p, uintptr_t images, uintptr_t start, uintptr_t actions,
         uintptr_t positions, uintptr_t values, uintptr_t end, uintptr_t penalty,
         uintptr_t stream_handle) {
#if EM_ACCEL_WITH_CUDA
        scan::segment_cuda(p, ptr<const void>(images), ptr<const void>(start),
                           ptr<const void>(actions), ptr<void>(positions), ptr<void>(values),
                           ptr<void>(end), ptr<void>(penalty), stream(stream_handle));
#else
        no_cuda("scan.segment_cuda");
#endif
      },
      py::call_guard<py::gil_scoped_release>());
}

const Register registered("scan", define);

}  // namespace
}  // namespace bindings
}  // namespace em
