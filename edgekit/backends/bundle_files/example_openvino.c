/* Minimal C integration of an edgekit OpenVINO bundle, with OpenVINO's C API (the openvino pip wheel ships its
 * headers in openvino/include and libopenvino_c in openvino/libs):
 *
 *   cc -std=c11 -o example example_openvino.c -I$OV/include -L$OV/libs -l:libopenvino_c.so.VERSION
 *   LD_LIBRARY_PATH=$OV/libs ./example properties.txt ../model.xml input_0.bin [input_1.bin ...]
 *
 * properties.txt holds the compile properties of the manifest ("KEY VALUE" per line, DEVICE first), the same
 * ones run.py applies: without them OpenVINO computes in bf16 on CPUs that have it. As in edgekit's
 * openvino_session.compute_hint, an f16 / bf16 precision hint becomes f32 on a device without native f16 / bf16
 * (never a lower precision than asked), and INFERENCE_NUM_THREADS 0 means every online core.
 * Each input file holds one sample (batch 1) as raw bytes in the model's element type and NCHW layout, already
 * preprocessed as manifest.json "preprocess" says (c/input_*.bin are the first golden sample). Prints the first
 * output's values, one per line, and its arg-max; on stderr, the precision and threads the compiled model reports. */
#define _POSIX_C_SOURCE 200809L
#include <openvino/c/openvino.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHECK(call)                                                      \
  do {                                                                   \
    ov_status_e status_ = (call);                                        \
    if (status_ != OK) {                                                 \
      fprintf(stderr, "%s failed: status %d\n", #call, (int)status_);   \
      return 1;                                                          \
    }                                                                    \
  } while (0)

static void *read_file(const char *path, size_t expected) {
  FILE *f = fopen(path, "rb");
  if (!f) { perror(path); return NULL; }
  void *data = malloc(expected);
  size_t n = fread(data, 1, expected, f);
  fclose(f);
  if (n != expected) { fprintf(stderr, "%s: %zu bytes, the model wants %zu\n", path, n, expected); free(data); return NULL; }
  return data;
}

/* 1 when the space-separated capability list names `cap` as a whole word */
static int has_capability(const char *list, const char *cap) {
  size_t n = strlen(cap);
  for (const char *p = strstr(list, cap); p; p = strstr(p + 1, cap))
    if ((p == list || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0')) return 1;
  return 0;
}

#define MAX_PROPERTIES 16

typedef struct {
  char device[128];
  char keys[MAX_PROPERTIES][128], values[MAX_PROPERTIES][128];
  ov_property_t list[MAX_PROPERTIES];
  size_t count;
} properties_t;

/* Reads properties.txt: DEVICE, then the compile properties, resolved for this device. */
static int read_properties(ov_core_t *core, const char *path, properties_t *props) {
  FILE *f = fopen(path, "r");
  if (!f) { perror(path); return 2; }
  char key[128], value[128];
  props->device[0] = '\0';
  props->count = 0;
  while (fscanf(f, "%127s %127s", key, value) == 2) {
    if (strcmp(key, "DEVICE") == 0) { snprintf(props->device, sizeof props->device, "%s", value); continue; }
    if (!props->device[0] || props->count == MAX_PROPERTIES) {
      fprintf(stderr, "%s: DEVICE must come first, then at most %d properties\n", path, MAX_PROPERTIES);
      fclose(f);
      return 2;
    }
    if (strcmp(key, "INFERENCE_NUM_THREADS") == 0 && strcmp(value, "0") == 0)
      snprintf(value, sizeof value, "%ld", sysconf(_SC_NPROCESSORS_ONLN));
    if (strcmp(key, "INFERENCE_PRECISION_HINT") == 0 && (strcmp(value, "f16") == 0 || strcmp(value, "bf16") == 0)) {
      char *caps = NULL;
      const char *needed = strcmp(value, "f16") == 0 ? "FP16" : "BF16";
      if (ov_core_get_property(core, props->device, "OPTIMIZATION_CAPABILITIES", &caps) != OK ||
          !has_capability(caps, needed)) {
        fprintf(stderr, "note: %s has no native %s compute: computing in f32\n", props->device, needed);
        snprintf(value, sizeof value, "f32");
      }
      if (caps) ov_free(caps);
    }
    size_t i = props->count++;
    memcpy(props->keys[i], key, sizeof key);
    memcpy(props->values[i], value, sizeof value);
    props->list[i].key = props->keys[i];
    props->list[i].value = props->values[i];
  }
  fclose(f);
  return props->device[0] ? 0 : 2;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s properties.txt MODEL.xml INPUT_0.bin [INPUT_1.bin ...]\n", argv[0]);
    return 2;
  }
  ov_core_t *core = NULL;
  ov_model_t *model = NULL;
  static properties_t props;
  CHECK(ov_core_create(&core));
  if (read_properties(core, argv[1], &props) != 0) return 2;
  CHECK(ov_core_read_model(core, argv[2], NULL, &model));

  /* the bundle's IR has a dynamic batch: fix it to 1 on every input */
  size_t inputs = 0;
  CHECK(ov_model_inputs_size(model, &inputs));
  if ((size_t)argc - 3 != inputs) { fprintf(stderr, "the model has %zu inputs, got %d files\n", inputs, argc - 3); return 2; }
  size_t *indexes = calloc(inputs, sizeof(size_t));
  ov_partial_shape_t *shapes = calloc(inputs, sizeof(ov_partial_shape_t));
  for (size_t i = 0; i < inputs; i++) {
    ov_output_const_port_t *port = NULL;
    CHECK(ov_model_const_input_by_index(model, i, &port));
    CHECK(ov_port_get_partial_shape(port, &shapes[i]));
    shapes[i].dims[0].min = shapes[i].dims[0].max = 1;
    indexes[i] = i;
    ov_output_const_port_free(port);
  }
  CHECK(ov_model_reshape_by_port_indexes(model, indexes, shapes, inputs));

  ov_compiled_model_t *compiled = NULL;
  ov_infer_request_t *request = NULL;
  CHECK(ov_core_compile_model_props(core, model, props.device, props.count, props.list, &compiled));
  CHECK(ov_compiled_model_create_infer_request(compiled, &request));
  char *precision = NULL, *threads = NULL;  /* what the compiled model reports, not what was asked */
  CHECK(ov_compiled_model_get_property(compiled, "INFERENCE_PRECISION_HINT", &precision));
  CHECK(ov_compiled_model_get_property(compiled, "INFERENCE_NUM_THREADS", &threads));
  fprintf(stderr, "applied: INFERENCE_PRECISION_HINT %s INFERENCE_NUM_THREADS %s\n", precision, threads);
  ov_free(precision);
  ov_free(threads);

  ov_tensor_t **tensors = calloc(inputs, sizeof(ov_tensor_t *));
  void **buffers = calloc(inputs, sizeof(void *));
  for (size_t i = 0; i < inputs; i++) {
    ov_output_const_port_t *port = NULL;
    ov_shape_t shape;
    ov_element_type_e type;
    CHECK(ov_compiled_model_input_by_index(compiled, i, &port));
    CHECK(ov_const_port_get_shape(port, &shape));
    CHECK(ov_port_get_element_type(port, &type));
    ov_tensor_t *probe = NULL;  /* a tensor of the right type and shape tells the byte size */
    size_t bytes = 0;
    CHECK(ov_tensor_create(type, shape, &probe));
    CHECK(ov_tensor_get_byte_size(probe, &bytes));
    ov_tensor_free(probe);
    buffers[i] = read_file(argv[3 + i], bytes);
    if (!buffers[i]) return 2;
    CHECK(ov_tensor_create_from_host_ptr(type, shape, buffers[i], &tensors[i]));
    CHECK(ov_infer_request_set_input_tensor_by_index(request, i, tensors[i]));
    ov_shape_free(&shape);
    ov_output_const_port_free(port);
  }

  CHECK(ov_infer_request_infer(request));

  ov_tensor_t *output = NULL;
  size_t count = 0;
  float *scores = NULL;
  CHECK(ov_infer_request_get_output_tensor_by_index(request, 0, &output));
  CHECK(ov_tensor_get_size(output, &count));
  CHECK(ov_tensor_data(output, (void **)&scores));
  size_t best = 0;
  for (size_t k = 0; k < count; k++) {
    printf("%.7g\n", scores[k]);
    if (scores[k] > scores[best]) best = k;
  }
  printf("argmax %zu\n", best);

  ov_tensor_free(output);
  for (size_t i = 0; i < inputs; i++) { ov_tensor_free(tensors[i]); free(buffers[i]); }
  for (size_t i = 0; i < inputs; i++) ov_partial_shape_free(&shapes[i]);
  free(tensors); free(buffers); free(shapes); free(indexes);
  ov_infer_request_free(request);
  ov_compiled_model_free(compiled);
  ov_model_free(model);
  ov_core_free(core);
  return 0;
}
