// pybind11 bindings of the t-SNE launchers (csrc/tsne/launch.h).
#include "../common/em_common.h"
#include "../tsne/launch.h"
#include "registry.h"

namespace em {
namespace bindings {
namespace {

using namespace tsne;
using py::arg;
using u = uintptr_t;

#if EM_ACCEL_WITH_CUDA
#define EM_CUDA_CALL(name, call) call
#else
#define EM_CUDA_CALL(name, call) no_cuda(name)
#endif

void define(py::module_& m) {
  m.doc() = "t-SNE kernels: perplexity calibration, attractive/repulsive forces, optimiser step";
  py::class_<PerplexityParams>(m, "PerplexityParams")
      .def(py::init<>())
      .def_readwrite("n", &PerplexityParams::n)
      .def_readwrite("k", &PerplexityParams::k)
      .def_readwrite("dtype", &PerplexityParams::dtype)
      .def_readwrite("perplexity", &PerplexityParams::perplexity)
      .def_readwrite("tol", &PerplexityParams::tol)
      .def_readwrite("max_iter", &PerplexityParams::max_iter);
  py::class_<NeighborParams>(m, "NeighborParams")
      .def(py::init<>())
      .def_readwrite("n", &NeighborParams::n)
      .def_readwrite("k", &NeighborParams::k)
      .def_readwrite("d", &NeighborParams::d)
      .def_readwrite("dtype", &NeighborParams::dtype);
  py::class_<AttractiveParams>(m, "AttractiveParams")
      .def(py::init<>())
      .def_readwrite("n", &AttractiveParams::n)
      .def_readwrite("dtype", &AttractiveParams::dtype)
      .def_readwrite("want_kl", &AttractiveParams::want_kl)
      .def_readwrite("index_bits", &AttractiveParams::index_bits);
  py::class_<RepulsiveParams>(m, "RepulsiveParams")
      .def(py::init<>())
      .def_readwrite("n", &RepulsiveParams::n)
      .def_readwrite("dtype", &RepulsiveParams::dtype);
  py::class_<InterpParams>(m, "InterpParams")
      .def(py::init<>())
      .def_readwrite("n", &InterpParams::n)
      .def_readwrite("dtype", &InterpParams::dtype)
      .def_readwrite("n_boxes", &InterpParams::n_boxes)
      .def_readwrite("p", &InterpParams::p)
      .def_readwrite("lower_x", &InterpParams::lower_x)
      .def_readwrite("lower_y", &InterpParams::lower_y)
      .def_readwrite("box_width", &InterpParams::box_width);
  py::class_<StepParams>(m, "StepParams")
      .def(py::init<>())
      .def_readwrite("n", &StepParams::n)
      .def_readwrite("dtype", &StepParams::dtype)
      .def_readwrite("alpha", &StepParams::alpha)
      .def_readwrite("inv_z", &StepParams::inv_z)
      .def_readwrite("momentum", &StepParams::momentum)
      .def_readwrite("lr", &StepParams::lr)
      .def_readwrite("min_gain", &StepParams::min_gain)
      .def_readwrite("max_step", &StepParams::max_step);
  m.attr("MAX_INTERP") = kMaxInterp;

  const auto nogil = py::call_guard<py::gil_scoped_release>();
  m.def("perplexity_cpu", [](const PerplexityParams& q, u d2, u p, u beta) {
    perplexity_cpu(q, ptr<const void>(d2), ptr<void>(p), ptr<double>(beta));
  }, nogil);
  m.def("perplexity_cuda", [](const PerplexityParams& q, u d2, u p, u beta, u s) {
    EM_CUDA_CALL("tsne.perplexity_cuda",
                 perplexity_cuda(q, ptr<const void>(d2), ptr<void>(p), ptr<double>(beta), stream(s)));
  }, nogil);
  m.def("neighbor_d2_cpu", [](const NeighborParams& q, u x, u idx, u d2) {
    neighbor_d2_cpu(q, ptr<const void>(x), ptr<const int64_t>(idx), ptr<void>(d2));
  }, nogil);
  m.def("neighbor_d2_cuda", [](const NeighborParams& q, u x, u idx, u d2, u s) {
    EM_CUDA_CALL("tsne.neighbor_d2_cuda",
                 neighbor_d2_cuda(q, ptr<const void>(x), ptr<const int64_t>(idx), ptr<void>(d2),
                                  stream(s)));
  }, nogil);
  m.def("attractive_cpu", [](const AttractiveParams& q, u y, u indptr, u indices, u values,
                             u force, u plogw) {
    attractive_cpu(q, ptr<const void>(y), ptr<const int64_t>(indptr), ptr<const void>(indices),
                   ptr<const void>(values), ptr<void>(force), ptr<double>(plogw));
  }, nogil);
  m.def("attractive_cuda", [](const AttractiveParams& q, u y, u indptr, u indices, u values,
                              u force, u plogw, u s) {
    EM_CUDA_CALL("tsne.attractive_cuda",
                 attractive_cuda(q, ptr<const void>(y), ptr<const int64_t>(indptr),
                                 ptr<const void>(indices), ptr<const void>(values),
                                 ptr<void>(force), ptr<double>(plogw), stream(s)));
  }, nogil);
  m.def("repulsive_exact_cpu", [](const RepulsiveParams& q, u y, u force, u zrow) {
    repulsive_exact_cpu(q, ptr<const void>(y), ptr<void>(force), ptr<double>(zrow));
  }, nogil);
  m.def("repulsive_exact_cuda", [](const RepulsiveParams& q, u y, u force, u zrow, u s) {
    EM_CUDA_CALL("tsne.repulsive_exact_cuda",
                 repulsive_exact_cuda(q, ptr<const void>(y), ptr<void>(force), ptr<double>(zrow),
                                      stream(s)));
  }, nogil);
  m.def("interp_spread_cpu", [](const InterpParams& q, u y, u grid, u order, u box_start) {
    interp_spread_cpu(q, ptr<const void>(y), ptr<void>(grid), ptr<int64_t>(order),
                      ptr<int64_t>(box_start));
  }, nogil);
  m.def("interp_gather_cpu", [](const InterpParams& q, u y, u pot, u force, u zrow) {
    interp_gather_cpu(q, ptr<const void>(y), ptr<const void>(pot), ptr<void>(force),
                      ptr<double>(zrow));
  }, nogil);
  m.def("interp_spread_cuda", [](const InterpParams& q, u y, u grid, u s) {
    EM_CUDA_CALL("tsne.interp_spread_cuda",
                 interp_spread_cuda(q, ptr<const void>(y), ptr<void>(grid), stream(s)));
  }, nogil);
  m.def("interp_gather_cuda", [](const InterpParams& q, u y, u pot, u force, u zrow, u s) {
    EM_CUDA_CALL("tsne.interp_gather_cuda",
                 interp_gather_cuda(q, ptr<const void>(y), ptr<const void>(pot), ptr<void>(force),
                                    ptr<double>(zrow), stream(s)));
  }, nogil);
  m.def("step_workspace_doubles", &step_workspace_doubles, arg("n"));
  m.def("step_cpu", [](const StepParams& q, u y, u upd, u gains, u attr, u rep, u bbox) {
    step_cpu(q, ptr<void>(y), ptr<void>(upd), ptr<void>(gains), ptr<const void>(attr),
             ptr<const void>(rep), ptr<double>(bbox));
  }, nogil);
  m.def("step_cuda", [](const StepParams& q, u y, u upd, u gains, u attr, u rep, u bbox, u work,
                        u s) {
    EM_CUDA_CALL("tsne.step_cuda",
                 step_cuda(q, ptr<void>(y), ptr<void>(upd), ptr<void>(gains),
                           ptr<const void>(attr), ptr<const void>(rep), ptr<double>(bbox),
                           ptr<double>(work), stream(s)));
  }, nogil);
}

const Register registered("tsne", define);

}  // namespace
}  // namespace bindings
}  // namespace em
