// mvcompile-runner: stream frames through an mvcompile artifact (model.so + io.txt) without Python, through the
// C API of mvc.h (mvc.cc holds every check of the artifact).
//
//   mvcompile-runner ARTIFACT_DIR FRAMES_FILE N_CALLS OUT_FILE [--threads N] [--pin] [--trusted-key KEY]...
//
// FRAMES_FILE holds raw little-endian float32 frames, each exactly the `input` shape of io.txt. Each call runs
// mvc_push (main(frame, *states) once); the logits of every call are appended to OUT_FILE (raw float32). One JSON
// line per call goes to stdout: {"call": i, "ms": latency}. See deploy/README.md.
#include "mvc.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

/*! \brief An error reported as "mvcompile-runner: error: ..." (exit code 1). */
struct RunnerError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/*! \brief A bad command line (exit code 2). */
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

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

std::string Dims(const int64_t* shape) {
  std::string dims;
  for (int i = 0; i < 5; ++i) dims += (i ? "," : "") + std::to_string(shape[i]);
  return "[" + dims + "]";
}

/*! \brief Open FRAMES_FILE after checking it holds at least n_calls whole frames of input `name`. */
std::ifstream OpenFrames(const fs::path& path, const std::string& name, const int64_t* shape, size_t floats,
                         long n_calls) {
  if (!fs::is_regular_file(path)) throw RunnerError("frames file not found: " + path.string());
  const uintmax_t size = fs::file_size(path), frame = floats * sizeof(float);
  const std::string what = "frames file " + path.string() + " has " + std::to_string(size) + " bytes";
  const std::string unit = name + " float32 " + Dims(shape) + " = " + std::to_string(frame) + " bytes (raw little-endian float32)";
  if (size % frame != 0) throw RunnerError(what + ", not a whole number of frames of " + unit);
  if (size / frame < static_cast<uintmax_t>(n_calls)) {
    throw RunnerError(what + " = " + std::to_string(size / frame) + " frames of " + unit + ", but N_CALLS is " +
                      std::to_string(n_calls));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw RunnerError("cannot open frames file " + path.string());
  return in;
}

/*! \brief Closes the model on every way out of Run. */
struct Model {
  mvc_model* m;
  ~Model() { mvc_close(m); }
};

int Run(const Options& opt) {
  std::vector<const char*> keys;
  for (const std::string& k : opt.trusted_keys) keys.push_back(k.c_str());
  // TVM binds each worker to a core unless TVM_BIND_THREADS is set to something else than 1; a bound worker whose
  // core is busy with another program stalls every parallel loop, so bind only when asked.
  setenv("TVM_BIND_THREADS", opt.pin ? "1" : "0", opt.pin ? 1 : 0);
  const mvc_options options{opt.threads, keys.data(), static_cast<int>(keys.size())};
  const Model model{mvc_open(opt.artifact_dir.c_str(), &options)};
  if (model.m == nullptr) throw RunnerError(mvc_last_error());
  const size_t in_floats = mvc_input_floats(model.m), out_floats = mvc_output_floats(model.m);
  std::ifstream frames = OpenFrames(opt.frames_file, mvc_input_name(model.m), mvc_input_shape(model.m), in_floats,
                                     opt.n_calls);
  std::ofstream out(opt.out_file, std::ios::binary | std::ios::trunc);
  if (!out) throw RunnerError("cannot write " + opt.out_file.string());
  std::vector<float> frame(in_floats), logits(out_floats);
  for (long call = 0; call < opt.n_calls; ++call) {
    frames.read(reinterpret_cast<char*>(frame.data()), static_cast<std::streamsize>(in_floats * sizeof(float)));
    if (!frames) throw RunnerError("short read from frames file at call " + std::to_string(call));
    const auto t0 = std::chrono::steady_clock::now();
    if (mvc_push(model.m, frame.data(), logits.data()) != 0) throw RunnerError(mvc_last_error());
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    out.write(reinterpret_cast<const char*>(logits.data()), static_cast<std::streamsize>(out_floats * sizeof(float)));
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
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mvcompile-runner: error: %s\n", e.what());
  }
  return 1;
}
