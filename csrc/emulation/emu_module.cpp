// hybridops._C_emu: the CUDA kernels and launchers of csrc/**/*.cu run on the CPU through the
// emulation (cuda_emulation.h), as torch.ops.hybridops_emu.<op> with the schemas of
// torch.ops.hybridops.<op> and CPU tensors in and out. Built only with HYBRIDOPS_BUILD_CUDA_EMU=1
// (tests and CI); users never need it.
//
// The module's functions: counters() -> dict of what the emulation ran since reset_counters(),
// kernels() -> the kernels launched since then, device_name() -> the emulated device profile's name.
#include <Python.h>  // first, as Python asks

#include <torch/library.h>

#include "emulation/cuda_emulation.h"
#include "op_schemas.h"

TORCH_LIBRARY(hybridops_emu, m) { hybridops::define_op_schemas(m); }

namespace {

PyObject* counters(PyObject*, PyObject*) {
  const hybridops::emu::Counters& c = hybridops::emu::counters();
  return Py_BuildValue("{s:K,s:K,s:K,s:K,s:K,s:K}", "launches", (unsigned long long)c.launches, "blocks",
                       (unsigned long long)c.blocks, "threads", (unsigned long long)c.threads, "barriers",
                       (unsigned long long)c.barriers, "warp_exchanges", (unsigned long long)c.warp_exchanges,
                       "switches", (unsigned long long)c.switches);
}

PyObject* kernels(PyObject*, PyObject*) {
  PyObject* out = PyList_New(0);
  for (const std::string& name : hybridops::emu::counters().kernels) {
    PyObject* item = PyUnicode_FromString(name.c_str());
    PyList_Append(out, item);
    Py_DECREF(item);
  }
  return out;
}

PyObject* reset_counters(PyObject*, PyObject*) {
  hybridops::emu::counters() = hybridops::emu::Counters{};
  Py_RETURN_NONE;
}

PyObject* device_name(PyObject*, PyObject*) {
  try {
    return PyUnicode_FromString(hybridops::emu::device_properties()->name);
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_ValueError, e.what());
    return nullptr;
  }
}

PyMethodDef kMethods[] = {
    {"counters", counters, METH_NOARGS, "Launches, blocks, threads, barriers, warp exchanges and fiber switches run."},
    {"kernels", kernels, METH_NOARGS,
     "The kernel expressions launched (sorted), e.g. 'im2col_kernel<scalar_t, int64_t>'."},
    {"reset_counters", reset_counters, METH_NOARGS, "Sets every counter to zero and forgets the kernels launched."},
    {"device_name", device_name, METH_NOARGS, "The emulated device (HYBRIDOPS_EMU_DEVICE)."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef kModule = {PyModuleDef_HEAD_INIT, "_C_emu",
                       "hybridops CUDA kernels on the CPU emulation (ops: torch.ops.hybridops_emu.*)", -1, kMethods,
                       nullptr, nullptr, nullptr, nullptr};

}  // namespace

PyMODINIT_FUNC PyInit__C_emu(void) { return PyModule_Create(&kModule); }
