// hybridops: every op schema, and the Python module with the build information.
//
// The module is plain Python C API, no pybind11: `import hybridops._C` runs the static registrations
// (TORCH_LIBRARY / TORCH_LIBRARY_IMPL) of every translation unit, and the five functions below report
// how the library was built. (torch/extension.h, pybind11 and all, made this the slowest host unit.)
#include <Python.h>  // first, as Python asks

#include <torch/library.h>

#include "op_schemas.h"

#ifdef HYBRIDOPS_WITH_CUDA
#include <cuda.h>
#endif

TORCH_LIBRARY(hybridops, m) { hybridops::define_op_schemas(m); }

namespace {

#ifdef HYBRIDOPS_WITH_CUDA
constexpr bool kWithCuda = true;
constexpr long kCudaVersion = CUDA_VERSION;
#else
constexpr bool kWithCuda = false;
constexpr long kCudaVersion = 0;
#endif

PyObject* version(PyObject*, PyObject*) { return PyUnicode_FromString(HYBRIDOPS_VERSION); }
PyObject* built_with_torch(PyObject*, PyObject*) { return PyUnicode_FromString(HYBRIDOPS_TORCH_VERSION); }
PyObject* with_cuda(PyObject*, PyObject*) { return PyBool_FromLong(kWithCuda); }
PyObject* cuda_archs(PyObject*, PyObject*) { return PyUnicode_FromString(HYBRIDOPS_CUDA_ARCHS); }
PyObject* cuda_version(PyObject*, PyObject*) { return PyLong_FromLong(kCudaVersion); }

PyMethodDef kMethods[] = {
    {"version", version, METH_NOARGS, "hybridops version this library was built as."},
    {"built_with_torch", built_with_torch, METH_NOARGS, "torch version this library was compiled against."},
    {"with_cuda", with_cuda, METH_NOARGS, "Whether the CUDA kernels were compiled in."},
    {"cuda_archs", cuda_archs, METH_NOARGS, "TORCH_CUDA_ARCH_LIST of the build ('' without CUDA)."},
    {"cuda_version", cuda_version, METH_NOARGS, "CUDA_VERSION of the build's toolkit (0 without CUDA)."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef kModule = {PyModuleDef_HEAD_INIT, "_C",
                       "hybridops compiled kernels (ops are registered as torch.ops.hybridops.*)", -1, kMethods,
                       nullptr, nullptr, nullptr, nullptr};

}  // namespace

// The module init function of hybridops._C (TORCH_EXTENSION_NAME is _C).
PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&kModule); }
