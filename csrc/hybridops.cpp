// hybridops: every op schema, and the Python module with the build information.
//
// The module is plain Python C API, no pybind11: `import hybridops._C` runs the static registrations
// (TORCH_LIBRARY / TORCH_LIBRARY_IMPL) of every translation unit, and the five functions below report
// how the library was built. (torch/extension.h, pybind11 and all, made this the slowest host unit.)
#include <Python.h>  // first, as Python asks

#include <torch/library.h>

#ifdef HYBRIDOPS_WITH_CUDA
#include <cuda.h>
#endif

TORCH_LIBRARY(hybridops, m) {
  // Modulated deformable convolution (DCNv2), torchvision's semantics and layouts.
  // input [N, C, H, W], offset [N, 2*OG*kH*kW, Ho, Wo], weight [Cout, C/groups, kH, kW],
  // mask [N, OG*kH*kW, Ho, Wo] or None (DCNv1), bias [Cout] or None -> [N, Cout, Ho, Wo].
  m.def(
      "deform_conv2d(Tensor input, Tensor offset, Tensor weight, Tensor? mask, Tensor? bias, "
      "int[2] stride, int[2] padding, int[2] dilation) -> Tensor");
  // -> (grad_input, grad_offset, grad_weight, grad_mask); grad_mask is empty ([0]) without mask.
  m.def(
      "deform_conv2d_backward(Tensor grad_output, Tensor input, Tensor offset, Tensor weight, Tensor? mask, "
      "int[2] stride, int[2] padding, int[2] dilation) -> (Tensor, Tensor, Tensor, Tensor)");
  // Mixed-kernel depthwise convolution (MixConv): input [N, C, H, W], weights = one [C_g, 1, k_g, k_g]
  // tensor per channel group (odd k_g, sum C_g = C, groups in channel order), bias [C] or None;
  // "same" padding dilation * (k_g - 1) / 2 per group -> [N, C, ceil(H / stride_h), ceil(W / stride_w)].
  m.def(
      "mixed_depthwise_conv2d(Tensor input, Tensor[] weights, Tensor? bias, int[2] stride, int[2] dilation) "
      "-> Tensor");
  // -> (grad_input, grad_weights); output_mask = (want grad_input, want grad_weights): what is not
  // wanted comes back as an empty [0] tensor / an empty list. grad_bias is grad_output.sum((0, 2, 3)).
  m.def(
      "mixed_depthwise_conv2d_backward(Tensor grad_output, Tensor input, Tensor[] weights, int[2] stride, "
      "int[2] dilation, bool[2] output_mask) -> (Tensor, Tensor[])");
}

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
