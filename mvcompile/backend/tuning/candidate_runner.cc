// mvcompile-candidate: call one MetaSchedule tuning candidate N times, for counting its instructions.
//
//   mvcompile-candidate LIBRARY N_CALLS DTYPE:D0,D1,... [DTYPE:SHAPE ...]
//
// LIBRARY is a candidate exported by MetaSchedule's builder (a shared library whose `main` is the
// scheduled PrimFunc); each further argument is one tensor argument of `main`, in order. Tensors are
// filled with the same pseudo-random values on every run, so two runs of different lengths execute the
// same code and their instruction counts differ by exactly the extra calls
// (mvcompile/backend/tuning/emulated_runner.py). Prints nothing on success; errors go to stderr, exit 1.
#include <dlpack/dlpack.h>
#include <tvm/ffi/container/shape.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/dtype.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

namespace ffi = tvm::ffi;

namespace {

/*! \brief 64-byte aligned host allocator for ffi::Tensor::FromNDAlloc. */
struct AlignedCPUAlloc {
  void AllocData(DLTensor* t) {
    const size_t size = (ffi::GetDataSize(*t) + 63) / 64 * 64;
    t->data = std::aligned_alloc(64, size ? size : 64);
    if (t->data == nullptr) throw std::runtime_error("out of memory allocating a tensor");
  }
  void FreeData(DLTensor* t) { std::free(t->data); }
};

int64_t ParseCount(const std::string& text, const char* what) {
  char* end = nullptr;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || v < 0) throw std::invalid_argument(std::string("bad ") + what + ": " + text);
  return v;
}

/*! \brief A tensor for "DTYPE:D0,D1,..." filled with fixed pseudo-random values (floats in [0,1), ints 0). */
ffi::Tensor MakeArgument(const std::string& spec, uint32_t* seed) {
  const size_t colon = spec.find(':');
  if (colon == std::string::npos) throw std::invalid_argument("argument must be DTYPE:D0,D1,...: " + spec);
  const DLDataType dtype = ffi::StringToDLDataType(spec.substr(0, colon));
  std::vector<int64_t> shape;
  const std::string dims = spec.substr(colon + 1);
  for (size_t start = 0; start < dims.size();) {
    size_t comma = dims.find(',', start);
    if (comma == std::string::npos) comma = dims.size();
    shape.push_back(ParseCount(dims.substr(start, comma - start), "dimension"));
    start = comma + 1;
  }
  ffi::Tensor t = ffi::Tensor::FromNDAlloc(AlignedCPUAlloc(), ffi::ShapeView(shape.data(), shape.size()), dtype,
                                           DLDevice{kDLCPU, 0});
  std::memset(t.data_ptr(), 0, ffi::GetDataSize(t));
  if (dtype.code == kDLFloat && dtype.bits == 32) {
    float* data = static_cast<float*>(t.data_ptr());
    for (size_t i = 0; i < ffi::GetDataSize(t) / sizeof(float); ++i) {
      *seed = *seed * 1664525u + 1013904223u;  // an LCG: the same values on every run
      data[i] = static_cast<float>(*seed >> 8) / 16777216.0f;
    }
  }
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: mvcompile-candidate LIBRARY N_CALLS DTYPE:D0,D1,... [...]\n");
    return 2;
  }
  try {
    const int64_t calls = ParseCount(argv[2], "N_CALLS");
    // dlopen needs a path with '/'
    ffi::Module lib = ffi::Module::LoadFromFile(std::filesystem::absolute(argv[1]).string());
    ffi::Optional<ffi::Function> fn = lib->GetFunction("main");
    if (!fn.has_value()) throw std::runtime_error(std::string(argv[1]) + " has no 'main' function");
    uint32_t seed = 12345;
    std::vector<ffi::Tensor> tensors;
    for (int i = 3; i < argc; ++i) tensors.push_back(MakeArgument(argv[i], &seed));
    std::vector<ffi::AnyView> args(tensors.begin(), tensors.end());
    ffi::Any result;
    for (int64_t i = 0; i < calls; ++i) fn.value().CallPacked(args.data(), static_cast<int32_t>(args.size()), &result);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mvcompile-candidate: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
