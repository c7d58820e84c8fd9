/* Minimal C integration of an edgekit OpenVINO bundle, with OpenVINO's C API (the openvino pip wheel ships its
 * headers in openvino/include and libopenvino_c in openvino/libs):
 *
 *   cc -std=c11 -o example example_openvino.c -I$OV/include -L$OV/libs -l:libopenvino_c.so.VERSION
 *   LD_LIBRARY_PATH=$OV/libs ./example ../model.xml input_0.bin [input_1.bin ...]
 *
 * Each input file holds one sample (batch 1) as raw bytes in the model's element type and NCHW layout, already
 * preprocessed as manifest.json "preprocess" says (c/input_*.bin are the first golden sample). Prints the first
 * output's values, one per line, and its arg-max. */
#include <openvino/c/openvino.h>
#include <stdio.h>
#include <stdlib.h>

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

int main(int argc, char **argv) {
  if (argc < 3) { fprintf(stderr, "usage: %s MODEL.xml INPUT_0.bin [INPUT_1.bin ...]\n", argv[0]); return 2; }
  ov_core_t *core = NULL;
  ov_model_t *model = NULL;
  CHECK(ov_core_create(&core));
  CHECK(ov_core_read_model(core, argv[1], NULL, &model));

  /* the bundle's IR has a dynamic batch: fix it to 1 on every input */
  size_t inputs = 0;
  CHECK(ov_model_inputs_size(model, &inputs));
  if ((size_t)argc - 2 != inputs) { fprintf(stderr, "the model has %zu inputs, got %d files\n", inputs, argc - 2); return 2; }
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
  CHECK(ov_core_compile_model(core, model, "CPU", 0, &compiled));
  CHECK(ov_compiled_model_create_infer_request(compiled, &request));

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
    buffers[i] = read_file(argv[2 + i], bytes);
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
