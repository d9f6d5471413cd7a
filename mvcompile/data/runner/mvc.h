/* mvc.h: the mvcompile runtime's C API, for embedding a compiled artifact (model.so + io.txt) in a program
 * without Python. Link with -lmvc (libmvc.so, over TVM's libtvm_runtime.so and libtvm_ffi.so).
 *
 *   mvc_model* m = mvc_open("/opt/a0-stream", NULL);
 *   if (!m) { fprintf(stderr, "%s\n", mvc_last_error()); return 1; }
 *   float* logits = malloc(mvc_output_floats(m) * sizeof(float));
 *   while (next_frame(frame))                          // frame: mvc_input_floats(m) floats, [B, T, H, W, 3] in [0, 1]
 *     if (mvc_push(m, frame, logits) != 0) { fprintf(stderr, "%s\n", mvc_last_error()); break; }
 *   mvc_close(m);
 *
 * A model keeps its streaming states between pushes: one model per video stream. Its functions are not
 * reentrant; use one model from one thread at a time (several models may run on several threads). Every
 * function that can fail returns NULL or -1 and leaves a one-line message for mvc_last_error().
 */
#ifndef MVC_H_
#define MVC_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mvc_model mvc_model;

typedef struct mvc_options {
  int num_threads;  /* TVM worker threads: sets TVM_NUM_THREADS in this process; 0: leave it (or TVM's default) */
  const char* const* trusted_keys;  /* only an artifact signed by one of these runs: .pub files or 64 hex digits */
  int num_trusted_keys;
} mvc_options;

/* Load an artifact folder (checks io.txt, model.so's ELF headers and I/O signature, and with trusted keys its
 * Ed25519 signature, all before model.so is loaded). `options` may be NULL. NULL on failure. */
mvc_model* mvc_open(const char* artifact_dir, const mvc_options* options);

/* Run one call: `frames` holds mvc_input_floats(m) floats (the io.txt input shape, row-major), `logits` receives
 * mvc_output_floats(m) floats. The states move on to the next call. 0 on success, -1 on failure (the states are
 * unchanged). */
int mvc_push(mvc_model* m, const float* frames, float* logits);

/* Every state back to its start value, as for a new video. 0 on success, -1 on failure. */
int mvc_reset(mvc_model* m);

/* Free the model (NULL is a no-op). */
void mvc_close(mvc_model* m);

/* The input's name (io.txt) and shape [B, T, H, W, C] (5 values), and the floats of one push's frames and logits. */
const char* mvc_input_name(const mvc_model* m);
const int64_t* mvc_input_shape(const mvc_model* m);
size_t mvc_input_floats(const mvc_model* m);
size_t mvc_output_floats(const mvc_model* m);

/* The last failure of this thread, one line ("" if none). Valid until the next failing call on this thread. */
const char* mvc_last_error(void);

#ifdef __cplusplus
}
#endif

#endif /* MVC_H_ */
