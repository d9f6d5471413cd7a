/* camera_loop: embed an mvcompile artifact in a camera loop through the C API (mvc.h).
 *
 * Reads raw RGB24 frames of the model's resolution from stdin, e.g. from a camera through ffmpeg:
 *
 *   ffmpeg -loglevel error -f v4l2 -i /dev/video0 -vf "fps=5,scale=172:172:force_original_aspect_ratio=increase,crop=172:172" \
 *          -pix_fmt rgb24 -f rawvideo - | ./camera_loop /opt/a0-stream --threads 4
 *
 * and prints, after every call, the best class and its logit. Build: gcc camera_loop.c -I. -L. -lmvc -o camera_loop
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mvc.h"

int main(int argc, char** argv) {
  if (argc != 2 && !(argc == 4 && strcmp(argv[2], "--threads") == 0)) {
    fprintf(stderr, "usage: camera_loop ARTIFACT_DIR [--threads N] < rgb24 frames\n");
    return 2;
  }
  mvc_options options = {argc == 4 ? atoi(argv[3]) : 0, NULL, 0};
  mvc_model* model = mvc_open(argv[1], &options);
  if (model == NULL) {
    fprintf(stderr, "camera_loop: %s\n", mvc_last_error());
    return 1;
  }
  const int64_t* shape = mvc_input_shape(model); /* [1, T, H, W, 3]: T frames per call */
  const size_t floats = mvc_input_floats(model), classes = mvc_output_floats(model);
  float* frames = malloc(floats * sizeof(float));
  float* logits = malloc(classes * sizeof(float));
  uint8_t* pixels = malloc(floats);
  int status = 0;
  if (shape[0] != 1 || frames == NULL || logits == NULL || pixels == NULL) {
    fprintf(stderr, "camera_loop: %s\n", shape[0] != 1 ? "the artifact must be built with --batch 1" : "out of memory");
    status = 1;
  }
  for (long call = 0; status == 0 && fread(pixels, 1, floats, stdin) == floats; ++call) {
    for (size_t i = 0; i < floats; ++i) frames[i] = pixels[i] / 255.0f; /* the model takes [0, 1] */
    if (mvc_push(model, frames, logits) != 0) {
      fprintf(stderr, "camera_loop: %s\n", mvc_last_error());
      status = 1;
      break;
    }
    size_t best = 0;
    for (size_t c = 1; c < classes; ++c) best = logits[c] > logits[best] ? c : best;
    printf("%ld %zu %.4f\n", call, best, logits[best]);
    fflush(stdout);
  }
  free(pixels);
  free(logits);
  free(frames);
  mvc_close(model);
  return status;
}
