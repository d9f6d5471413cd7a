// mvcompile-runner: stream frames through an mvcompile artifact (model.so + io.txt) without Python.
//
//   mvcompile-runner ARTIFACT_DIR FRAMES_FILE N_CALLS OUT_FILE [--threads N] [--pin] [--trusted-key KEY]...
//
// Before model.so is loaded: with --trusted-key (a .pub file of `mvcompile keygen`, or its 64 hex digits), the
// artifact must carry an Ed25519 signature by one of those keys over its files (artifact.sig; libsodium), and
// always, model.so's own I/O signature (ELF section .mvcompile_io) must hold this io.txt and its self-hash.
// FRAMES_FILE holds raw little-endian float32 frames, each exactly the `input` shape of io.txt.
// Each call runs main(frame, *states); the logits of every call are appended to OUT_FILE (raw float32)
// and the new states are fed to the next call. One JSON line per call goes to stdout:
// {"call": i, "ms": latency}. See deploy/README.md.
#include <dlpack/dlpack.h>
#include <tvm/ffi/any.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/shape.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>

#include <elf.h>
#include <sodium.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "mvcompile-runner reads and writes little-endian float32 and needs a little-endian target"
#endif

namespace ffi = tvm::ffi;
namespace fs = std::filesystem;

namespace {

constexpr const char* kIoHeader = "# mvcompile io v1";
constexpr int kPooledAllocator = 2;  // vm_initialization allocator type: 1 naive, 2 pooled

/*! \brief An error reported to the user as "mvcompile-runner: error: ..." (exit code 1). */
struct RunnerError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/*! \brief A bad command line (exit code 2). */
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/*! \brief One tensor line of io.txt. */
struct TensorSpec {
  std::string name;        // VM argument name (input, state) or result name (output)
  std::string state_out;   // for states: name of the output that carries the new state
  std::string dtype_name;  // float32, int32, int64 or int8 (states only)
  DLDataType dtype{};
  std::vector<int64_t> shape;
  int fill = 0;  // every element's start value (an int8 state's zero point)

  size_t numel() const {
    size_t n = 1;
    for (int64_t d : shape) n *= static_cast<size_t>(d);
    return n;
  }
  size_t nbytes() const { return numel() * dtype.bits / 8; }  // bounded by CheckedBytes when read
  std::string Describe() const {
    std::string dims;
    for (size_t i = 0; i < shape.size(); ++i) dims += (i ? "," : "") + std::to_string(shape[i]);
    return name + " " + dtype_name + " [" + dims + "]";
  }
};

/*! \brief Parsed io.txt: the VM arguments are (input, *states), the results (output, *new states). */
struct IoSpec {
  TensorSpec input;
  std::vector<TensorSpec> states;
  TensorSpec output;
};

DLDataType ParseDtype(const std::string& s, const std::string& where) {
  if (s == "float32") return DLDataType{kDLFloat, 32, 1};
  if (s == "int32") return DLDataType{kDLInt, 32, 1};
  if (s == "int64") return DLDataType{kDLInt, 64, 1};
  if (s == "int8") return DLDataType{kDLInt, 8, 1};
  throw RunnerError(where + ": unsupported dtype '" + s + "' (expected float32, int32, int64 or int8)");
}

constexpr long long kMaxDim = 2147483647;         // as the Python loader's manifest schema
constexpr size_t kMaxRank = 8;
constexpr uint64_t kMaxTensorBytes = 1ull << 30;  // one tensor; the states together at most twice that
constexpr size_t kMaxStates = 4096;

std::vector<int64_t> ParseDims(const std::string& s, const std::string& where) {
  std::vector<int64_t> dims;
  std::stringstream ss(s);
  std::string tok;
  while (std::getline(ss, tok, ',')) {
    char* end = nullptr;
    errno = 0;
    long long v = std::strtoll(tok.c_str(), &end, 10);
    if (tok.empty() || *end != '\0' || v <= 0 || v > kMaxDim || errno == ERANGE) {
      throw RunnerError(where + ": bad dims '" + s + "' (expected positive integers like 1,1,32,32,3)");
    }
    dims.push_back(v);
  }
  if (dims.empty() || dims.size() > kMaxRank) throw RunnerError(where + ": dims '" + s + "' must have 1 to 8 entries");
  return dims;
}

/*! \brief Bytes of a tensor line, checked against kMaxTensorBytes without overflowing. */
uint64_t CheckedBytes(const TensorSpec& spec, const std::string& where) {
  uint64_t bytes = spec.dtype.bits / 8;
  for (int64_t d : spec.shape) {
    if (bytes > kMaxTensorBytes / static_cast<uint64_t>(d)) {
      throw RunnerError(where + ": " + spec.Describe() + " is larger than " + std::to_string(kMaxTensorBytes) + " bytes");
    }
    bytes *= static_cast<uint64_t>(d);
  }
  return bytes;
}

IoSpec ReadIoSpec(const fs::path& path) {
  std::ifstream in(path);
  if (!in) throw RunnerError("cannot open " + path.string() + " (every artifact has an io.txt)");
  std::string line;
  if (!std::getline(in, line) || line != kIoHeader) {
    throw RunnerError(path.string() + ": first line must be '" + kIoHeader + "'");
  }
  IoSpec io;
  bool have_input = false, have_output = false;
  uint64_t state_bytes = 0;
  for (int lineno = 2; std::getline(in, line); ++lineno) {
    std::istringstream ls(line);
    std::vector<std::string> tok;
    for (std::string t; ls >> t;) tok.push_back(t);
    if (tok.empty()) continue;
    const std::string where = path.string() + ":" + std::to_string(lineno);
    const std::string& kind = tok[0];
    const size_t want = kind == "state" ? 5 : 4;
    const bool has_fill = kind == "state" && tok.size() == want + 1;
    if ((kind != "input" && kind != "state" && kind != "output") || (tok.size() != want && !has_fill)) {
      throw RunnerError(where + ": expected 'input NAME DTYPE DIMS', 'state IN OUT DTYPE DIMS [FILL]' or "
                                "'output NAME DTYPE DIMS', got '" + line + "'");
    }
    if (have_output || (kind != "input" && !have_input) || (kind == "input" && have_input)) {
      throw RunnerError(where + ": lines must be one input, then the states, then one output");
    }
    TensorSpec spec;
    spec.name = tok[1];
    if (kind == "state") spec.state_out = tok[2];
    spec.dtype_name = tok[want - 2];
    spec.dtype = ParseDtype(spec.dtype_name, where);
    spec.shape = ParseDims(tok[want - 1], where);
    if (kind != "state" && spec.dtype_name != "float32") {
      throw RunnerError(where + ": the " + kind + " must be float32, got " + spec.dtype_name);
    }
    if (has_fill) {
      char* end = nullptr;
      errno = 0;
      const long fill = std::strtol(tok[want].c_str(), &end, 10);
      if (*end != '\0' || errno == ERANGE || spec.dtype_name != "int8" || fill < -128 || fill > 127 || fill == 0) {
        throw RunnerError(where + ": bad start value '" + tok[want] + "' (only an int8 state has one, -128..127)");
      }
      spec.fill = static_cast<int>(fill);
    }
    state_bytes += kind == "state" ? CheckedBytes(spec, where) : 0;
    if (kind != "state") CheckedBytes(spec, where);
    if (kind == "input" && spec.shape.size() != 5) {
      throw RunnerError(where + ": the input must be frames [B, T, H, W, C], got " + spec.Describe());
    }
    if (kind == "output" && spec.shape[0] != io.input.shape[0]) {
      throw RunnerError(where + ": the output's batch " + std::to_string(spec.shape[0]) + " differs from the input's " +
                        std::to_string(io.input.shape[0]));
    }
    if (kind == "state" && (io.states.size() >= kMaxStates || state_bytes > 2 * kMaxTensorBytes)) {
      throw RunnerError(where + ": too many or too large states (at most " + std::to_string(kMaxStates) + ", " +
                        std::to_string(2 * kMaxTensorBytes) + " bytes together)");
    }
    if (kind == "input") {
      io.input = std::move(spec);
      have_input = true;
    } else if (kind == "state") {
      io.states.push_back(std::move(spec));
    } else {
      io.output = std::move(spec);
      have_output = true;
    }
  }
  if (!have_output) throw RunnerError(path.string() + ": no 'output' line");
  return io;
}

/*! \brief 64-byte aligned host allocator for ffi::Tensor::FromNDAlloc. */
struct AlignedCPUAlloc {
  void AllocData(DLTensor* t) {
    const size_t size = (ffi::GetDataSize(*t) + 63) / 64 * 64;
    t->data = std::aligned_alloc(64, size ? size : 64);
    if (t->data == nullptr) throw RunnerError("out of memory allocating a tensor");
  }
  void FreeData(DLTensor* t) { std::free(t->data); }
};

/*! \brief A host tensor with the shape and dtype of spec, every element at its start value (0, or an int8 fill). */
ffi::Tensor ZeroTensor(const TensorSpec& spec) {
  ffi::Tensor t = ffi::Tensor::FromNDAlloc(AlignedCPUAlloc(), ffi::ShapeView(spec.shape.data(), spec.shape.size()),
                                           spec.dtype, DLDevice{kDLCPU, 0});
  std::memset(t.data_ptr(), spec.fill, spec.nbytes());  // fill is non-zero only for one-byte (int8) states
  return t;
}

/*! \brief Check that a VM result matches the io.txt line it stands for. */
void CheckResult(const ffi::Tensor& t, const TensorSpec& spec, const std::string& role) {
  const bool same_dtype = t.dtype().code == spec.dtype.code && t.dtype().bits == spec.dtype.bits &&
                          t.dtype().lanes == spec.dtype.lanes;
  const ffi::ShapeView shape = t.shape();
  const bool same_shape = std::equal(shape.begin(), shape.end(), spec.shape.begin(), spec.shape.end());
  if (!same_dtype || !same_shape) {
    TensorSpec got{spec.name, "", ffi::DLDataTypeToString(t.dtype()), t.dtype(),
                   std::vector<int64_t>(shape.begin(), shape.end())};
    throw RunnerError("model result " + role + " is " + got.Describe() + " but io.txt says " + spec.Describe() +
                      " (io.txt does not match model.so)");
  }
  if (t.device().device_type != kDLCPU || !t.IsContiguous()) {
    throw RunnerError("model result " + role + " is not a contiguous CPU tensor");
  }
}

/*! \brief Refuse a library whose ELF headers or loadable segments end beyond the file (a truncated
 *  model.so would be mapped by dlopen and crash with SIGBUS when a missing page is touched). */
template <typename Ehdr, typename Phdr>
void CheckElfExtent(std::ifstream& in, uint64_t size, const std::string& where) {
  Ehdr eh{};
  in.seekg(0);
  if (!in.read(reinterpret_cast<char*>(&eh), sizeof eh)) throw RunnerError(where + ": truncated ELF header");
  if (eh.e_type != ET_DYN) throw RunnerError(where + ": not a shared object");
  const uint64_t ph_end = eh.e_phoff + uint64_t{eh.e_phnum} * eh.e_phentsize;
  const uint64_t sh_end = eh.e_shoff + uint64_t{eh.e_shnum} * eh.e_shentsize;
  if (ph_end > size || (eh.e_shnum && sh_end > size) || (eh.e_phnum && eh.e_phentsize < sizeof(Phdr))) {
    throw RunnerError(where + ": truncated or malformed (ELF headers beyond its " + std::to_string(size) + " bytes)");
  }
  for (unsigned i = 0; i < eh.e_phnum; ++i) {
    Phdr ph{};
    in.seekg(static_cast<std::streamoff>(eh.e_phoff + uint64_t{i} * eh.e_phentsize));
    if (!in.read(reinterpret_cast<char*>(&ph), sizeof ph)) throw RunnerError(where + ": cannot read its program headers");
    if (ph.p_type == PT_LOAD && uint64_t{ph.p_offset} + ph.p_filesz > size) {
      throw RunnerError(where + ": truncated (a loadable segment ends beyond its " + std::to_string(size) + " bytes)");
    }
  }
}

void CheckLibrary(const fs::path& model) {
  std::ifstream in(model, std::ios::binary);
  unsigned char ident[EI_NIDENT] = {};
  if (!in.read(reinterpret_cast<char*>(ident), EI_NIDENT) || std::memcmp(ident, ELFMAG, SELFMAG) != 0) {
    throw RunnerError(model.string() + ": not a shared library (no ELF header)");
  }
  const uint64_t size = fs::file_size(model);
  if (ident[EI_CLASS] == ELFCLASS64) {
    CheckElfExtent<Elf64_Ehdr, Elf64_Phdr>(in, size, model.string());
  } else if (ident[EI_CLASS] == ELFCLASS32) {
    CheckElfExtent<Elf32_Ehdr, Elf32_Phdr>(in, size, model.string());
  } else {
    throw RunnerError(model.string() + ": unknown ELF class");
  }
}

constexpr const char* kSection = ".mvcompile_io";
constexpr const char* kSectionMagic = "mvcompile-io/1";
constexpr const char* kSelfHash = "mvcompile-self-sha256:";
constexpr const char* kSignatureMagic = "mvcompile-signature/1";
constexpr uint64_t kMaxReadBytes = 4ull << 30;  // a file read whole: model.so, io.txt, artifact.sig

std::string ReadWhole(const fs::path& path, const std::string& what) {
  std::error_code ec;
  if (!fs::is_regular_file(fs::symlink_status(path, ec))) throw RunnerError(what + " " + path.string() + ": missing or not a regular file");
  if (fs::file_size(path) > kMaxReadBytes) throw RunnerError(what + " " + path.string() + ": too large");
  std::ifstream in(path, std::ios::binary);
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (!in.good() && !in.eof()) throw RunnerError("cannot read " + path.string());
  return data;
}

std::string Hex(const unsigned char* data, size_t n) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < n; ++i) out += {digits[data[i] >> 4], digits[data[i] & 15]};
  return out;
}

std::string Sha256Hex(const std::string& data) {
  unsigned char digest[crypto_hash_sha256_BYTES];
  crypto_hash_sha256(digest, reinterpret_cast<const unsigned char*>(data.data()), data.size());
  return Hex(digest, sizeof digest);
}

bool FromHex(const std::string& text, std::vector<unsigned char>* out) {
  if (text.size() % 2) return false;
  out->clear();
  for (size_t i = 0; i < text.size(); i += 2) {
    auto nibble = [](char c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1; };
    int hi = nibble(text[i]), lo = nibble(text[i + 1]);
    if (hi < 0 || lo < 0) return false;
    out->push_back(static_cast<unsigned char>(hi * 16 + lo));
  }
  return true;
}

/*! \brief A trusted public key: 64 hex digits, or a file holding 'mvcompile-ed25519 <64 hex digits>'. */
std::vector<unsigned char> ReadTrustedKey(const std::string& arg) {
  std::vector<unsigned char> key;
  if (arg.size() == 64 && FromHex(arg, &key)) return key;
  std::string text = ReadWhole(arg, "trusted key");
  std::istringstream ls(text);
  std::string prefix, digits;
  ls >> prefix >> digits;
  if (prefix != "mvcompile-ed25519" || digits.size() != 64 || !FromHex(digits, &key)) {
    throw RunnerError(arg + ": not an mvcompile public key (one line 'mvcompile-ed25519 <64 hex digits>')");
  }
  return key;
}

/*! \brief Check ARTIFACT_DIR/artifact.sig: signed by one of `trusted`, and the files the runner reads (model.so,
 *  io.txt) listed with their sha256. Nothing of the artifact is loaded before this passes. */
void VerifySignature(const fs::path& dir, const std::vector<std::vector<unsigned char>>& trusted) {
  const fs::path path = dir / "artifact.sig";
  if (!fs::exists(fs::symlink_status(path))) {
    throw RunnerError(dir.string() + ": not signed (no artifact.sig); --trusted-key was given, so only an artifact "
                      "signed with one of those keys runs");
  }
  const std::string text = ReadWhole(path, "signature");
  std::vector<std::string> lines;
  std::istringstream ls(text);
  for (std::string line; std::getline(ls, line);) lines.push_back(line);
  if (lines.size() < 4 || lines[0] != kSignatureMagic || lines[1].rfind("key ", 0) != 0 ||
      lines[2].rfind("signature ", 0) != 0 || text.back() != '\n') {
    throw RunnerError(path.string() + ": not an mvcompile signature file");
  }
  std::vector<unsigned char> key, signature;
  if (!FromHex(lines[1].substr(4), &key) || key.size() != crypto_sign_PUBLICKEYBYTES ||
      !FromHex(lines[2].substr(10), &signature) || signature.size() != crypto_sign_BYTES) {
    throw RunnerError(path.string() + ": malformed key or signature line");
  }
  bool known = false;
  for (const auto& k : trusted) known = known || k == key;
  if (!known) {
    throw RunnerError(dir.string() + ": signed by key " + lines[1].substr(4, 16) + "..., which is not a trusted key; "
                      "refusing to load its native code");
  }
  std::string message = lines[0] + "\n" + lines[1] + "\n";
  std::map<std::string, std::string> listed;
  for (size_t i = 3; i < lines.size(); ++i) {
    message += lines[i] + "\n";
    if (lines[i].size() < 67 || lines[i].substr(64, 2) != "  ") throw RunnerError(path.string() + ": malformed file line");
    listed[lines[i].substr(66)] = lines[i].substr(0, 64);
  }
  if (crypto_sign_verify_detached(signature.data(), reinterpret_cast<const unsigned char*>(message.data()),
                                  message.size(), key.data()) != 0) {
    throw RunnerError(path.string() + ": the signature does not match its file list (artifact.sig edited); "
                      "refusing to load the artifact");
  }
  for (const char* name : {"io.txt", "model.so", "manifest.json"}) {
    auto it = listed.find(name);
    if (it == listed.end()) throw RunnerError(path.string() + ": does not cover " + name);
    if (Sha256Hex(ReadWhole(dir / name, "artifact file")) != it->second) {
      throw RunnerError((dir / name).string() + ": modified after signing (its sha256 differs from artifact.sig); "
                        "refusing to load the artifact");
    }
  }
}

/*! \brief The bytes of ELF section `name` of `image` (a whole ELF file), or nothing. */
template <typename Ehdr, typename Shdr>
bool FindSection(const std::string& image, const std::string& name, std::string* out, const std::string& where) {
  Ehdr eh{};
  std::memcpy(&eh, image.data(), sizeof eh);
  const uint64_t size = image.size();
  if (!eh.e_shnum || eh.e_shentsize < sizeof(Shdr) || eh.e_shstrndx >= eh.e_shnum ||
      eh.e_shoff + uint64_t{eh.e_shnum} * eh.e_shentsize > size) {
    throw RunnerError(where + ": its ELF section table is missing or malformed");
  }
  auto header = [&](unsigned i) {
    Shdr sh{};
    std::memcpy(&sh, image.data() + eh.e_shoff + uint64_t{i} * eh.e_shentsize, sizeof sh);
    return sh;
  };
  const Shdr names = header(eh.e_shstrndx);
  if (uint64_t{names.sh_offset} + names.sh_size > size) throw RunnerError(where + ": section names beyond the file");
  for (unsigned i = 0; i < eh.e_shnum; ++i) {
    const Shdr sh = header(i);
    if (sh.sh_name >= names.sh_size) continue;
    const char* section_name = image.data() + names.sh_offset + sh.sh_name;
    if (strnlen(section_name, names.sh_size - sh.sh_name) == name.size() && name == section_name) {
      if (uint64_t{sh.sh_offset} + sh.sh_size > size) throw RunnerError(where + ": section " + name + " beyond the file");
      out->assign(image.data() + sh.sh_offset, sh.sh_size);
      return true;
    }
  }
  return false;
}

/*! \brief model.so vouches for itself: its section .mvcompile_io holds the io.txt it was built with, and its
 *  self-hash (sha256 of the file with those 64 digits as zeros) matches; read from the file, not loaded. */
void CheckIoSignature(const fs::path& model, const std::string& io_text) {
  const std::string where = model.string();
  std::string image = ReadWhole(model, "model");
  std::string section;
  const bool found = static_cast<unsigned char>(image[EI_CLASS]) == ELFCLASS64
                         ? FindSection<Elf64_Ehdr, Elf64_Shdr>(image, kSection, &section, where)
                         : FindSection<Elf32_Ehdr, Elf32_Shdr>(image, kSection, &section, where);
  if (!found) {
    throw RunnerError(where + ": carries no I/O signature (section .mvcompile_io): made by an older mvcompile, or not "
                      "by mvcompile; rebuild the artifact");
  }
  std::vector<std::string> parts;
  for (size_t start = 0, end; (end = section.find('\0', start)) != std::string::npos; start = end + 1) {
    parts.push_back(section.substr(start, end - start));
  }
  const std::string marker = kSelfHash;
  if (parts.size() != 5 || parts[0] != kSectionMagic || parts[4].rfind(marker, 0) != 0 ||
      parts[4].size() != marker.size() + 64) {
    throw RunnerError(where + ": its I/O signature (section .mvcompile_io) is malformed; rebuild the artifact");
  }
  if (parts[1] != io_text) {
    throw RunnerError("io.txt differs from the table " + where + " was built with (io.txt edited?); rebuild the artifact");
  }
  const size_t at = image.find(marker);
  if (at == std::string::npos || image.find(marker, at + 1) != std::string::npos) {
    throw RunnerError(where + ": its self-hash is missing or not unique; rebuild the artifact");
  }
  const std::string recorded = image.substr(at + marker.size(), 64);
  image.replace(at + marker.size(), 64, std::string(64, '0'));
  if (Sha256Hex(image) != recorded) {
    throw RunnerError(where + ": damaged: its content does not match the self-hash it was built with; rebuild the "
                      "artifact");
  }
}

/*! \brief The Relax VM `main` function of ARTIFACT_DIR/model.so. */
ffi::Function LoadMain(const fs::path& model) {
  if (!fs::is_regular_file(model)) throw RunnerError("model not found: " + model.string());
  CheckLibrary(model);
  ffi::Module lib = ffi::Module::LoadFromFile(fs::absolute(model).string());  // dlopen needs a path with '/'
  ffi::Optional<ffi::Function> load = lib->GetFunction("vm_load_executable");
  if (!load.has_value()) throw RunnerError(model.string() + " is not a Relax VM executable (no vm_load_executable)");
  ffi::Module vm = load.value()().cast<ffi::Module>();
  vm->GetFunction("vm_initialization").value()(static_cast<int>(kDLCPU), 0, kPooledAllocator);
  ffi::Optional<ffi::Function> main_fn = vm->GetFunction("main");
  if (!main_fn.has_value()) throw RunnerError(model.string() + " has no 'main' function");
  return main_fn.value();
}

struct Options {
  fs::path artifact_dir, frames_file, out_file;
  long n_calls = 0;
  int threads = 0;  // 0: leave TVM_NUM_THREADS / the TVM default alone
  bool pin = false;  // --pin: each TVM worker bound to its own core (else unbound, unless TVM_BIND_THREADS=1)
  std::vector<std::string> trusted_keys;  // --trusted-key: only an artifact signed by one of these runs
};

long ParsePositive(const std::string& s, const std::string& what) {
  char* end = nullptr;
  long v = std::strtol(s.c_str(), &end, 10);
  if (s.empty() || *end != '\0' || v <= 0) throw UsageError(what + " must be a positive integer, got '" + s + "'");
  return v;
}

Options ParseArgs(int argc, char** argv) {
  std::vector<std::string> pos;
  Options opt;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--threads") {
      if (i + 1 >= argc) throw UsageError("--threads needs a value");
      opt.threads = static_cast<int>(ParsePositive(argv[++i], "--threads"));
    } else if (a.rfind("--threads=", 0) == 0) {
      opt.threads = static_cast<int>(ParsePositive(a.substr(10), "--threads"));
    } else if (a == "--pin") {
      opt.pin = true;
    } else if (a == "--trusted-key") {
      if (i + 1 >= argc) throw UsageError("--trusted-key needs a value");
      opt.trusted_keys.push_back(argv[++i]);
    } else if (a.size() > 1 && a[0] == '-') {
      throw UsageError("unknown option " + a);
    } else {
      pos.push_back(a);
    }
  }
  if (pos.size() != 4) throw UsageError("expected 4 arguments, got " + std::to_string(pos.size()));
  opt.artifact_dir = pos[0];
  opt.frames_file = pos[1];
  opt.n_calls = ParsePositive(pos[2], "N_CALLS");
  opt.out_file = pos[3];
  return opt;
}

/*! \brief Open FRAMES_FILE after checking it holds at least n_calls whole frames. */
std::ifstream OpenFrames(const fs::path& path, const TensorSpec& input, long n_calls) {
  if (!fs::is_regular_file(path)) throw RunnerError("frames file not found: " + path.string());
  const uintmax_t size = fs::file_size(path), frame = input.nbytes();
  const std::string what = "frames file " + path.string() + " has " + std::to_string(size) + " bytes";
  const std::string unit = input.Describe() + " = " + std::to_string(frame) + " bytes (raw little-endian float32)";
  if (size % frame != 0) throw RunnerError(what + ", not a whole number of frames of " + unit);
  if (size / frame < static_cast<uintmax_t>(n_calls)) {
    throw RunnerError(what + " = " + std::to_string(size / frame) + " frames of " + unit + ", but N_CALLS is " +
                      std::to_string(n_calls));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw RunnerError("cannot open frames file " + path.string());
  return in;
}

int Run(const Options& opt) {
  if (opt.threads > 0) setenv("TVM_NUM_THREADS", std::to_string(opt.threads).c_str(), 1);
  // TVM binds each worker to a core unless TVM_BIND_THREADS is set to something else than 1; a bound worker whose
  // core is busy with another program stalls every parallel loop, so bind only when asked.
  setenv("TVM_BIND_THREADS", opt.pin ? "1" : "0", opt.pin ? 1 : 0);
  if (sodium_init() < 0) throw RunnerError("libsodium failed to initialise");
  if (!opt.trusted_keys.empty()) {
    std::vector<std::vector<unsigned char>> trusted;
    for (const std::string& k : opt.trusted_keys) trusted.push_back(ReadTrustedKey(k));
    VerifySignature(opt.artifact_dir, trusted);
  }
  const IoSpec io = ReadIoSpec(opt.artifact_dir / "io.txt");
  std::ifstream frames = OpenFrames(opt.frames_file, io.input, opt.n_calls);
  std::ofstream out(opt.out_file, std::ios::binary | std::ios::trunc);
  if (!out) throw RunnerError("cannot write " + opt.out_file.string());
  CheckLibrary(opt.artifact_dir / "model.so");
  CheckIoSignature(opt.artifact_dir / "model.so", ReadWhole(opt.artifact_dir / "io.txt", "io table"));
  ffi::Function main_fn = LoadMain(opt.artifact_dir / "model.so");

  ffi::Tensor frame = ZeroTensor(io.input);
  std::vector<ffi::Tensor> states;
  for (const TensorSpec& s : io.states) states.push_back(ZeroTensor(s));
  const size_t n_results = 1 + states.size();

  for (long call = 0; call < opt.n_calls; ++call) {
    frames.read(static_cast<char*>(frame.data_ptr()), static_cast<std::streamsize>(io.input.nbytes()));
    if (!frames) throw RunnerError("short read from frames file at call " + std::to_string(call));
    std::vector<ffi::AnyView> args{frame};
    for (const ffi::Tensor& s : states) args.emplace_back(s);
    ffi::Any ret;
    const auto t0 = std::chrono::steady_clock::now();
    try {
      main_fn.CallPacked(args.data(), static_cast<int32_t>(args.size()), &ret);
    } catch (const ffi::Error& e) {
      if (call > 0) throw;
      throw RunnerError("model.so rejected the arguments built from io.txt (io.txt does not match the model?): " +
                        e.kind() + ": " + e.message());
    }
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();

    std::vector<ffi::Tensor> results;
    if (auto arr = ret.as<ffi::Array<ffi::Any>>()) {
      for (const ffi::Any& r : *arr) results.push_back(r.cast<ffi::Tensor>());
    } else {
      results.push_back(ret.cast<ffi::Tensor>());
    }
    if (results.size() != n_results) {
      throw RunnerError("model returned " + std::to_string(results.size()) + " results but io.txt lists logits + " +
                        std::to_string(states.size()) + " states");
    }
    CheckResult(results[0], io.output, "0 (logits)");
    for (size_t k = 0; k < states.size(); ++k) {
      CheckResult(results[k + 1], io.states[k],
                  std::to_string(k + 1) + " (new state " + io.states[k].state_out + ")");
      states[k] = results[k + 1];
    }
    out.write(static_cast<const char*>(results[0].data_ptr()), static_cast<std::streamsize>(io.output.nbytes()));
    std::printf("{\"call\": %ld, \"ms\": %.4f}\n", call, ms);
    std::fflush(stdout);
  }
  out.close();
  if (!out) throw RunnerError("error writing " + opt.out_file.string());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return Run(ParseArgs(argc, argv));
  } catch (const UsageError& e) {
    std::fprintf(stderr,
                 "mvcompile-runner: %s\nusage: mvcompile-runner ARTIFACT_DIR FRAMES_FILE N_CALLS OUT_FILE [--threads N] "
                 "[--pin] [--trusted-key KEY]...\n",
                 e.what());
    return 2;
  } catch (const RunnerError& e) {
    std::fprintf(stderr, "mvcompile-runner: error: %s\n", e.what());
  } catch (const ffi::Error& e) {
    std::fprintf(stderr, "mvcompile-runner: error: TVM %s: %s\n", e.kind().c_str(), e.message().c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mvcompile-runner: error: %s\n", e.what());
  }
  return 1;
}
