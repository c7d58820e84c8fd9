"""A model file as a C array, for firmware that embeds the model (the TFLite Micro way): a header declaring it and a
source defining it, 16-byte aligned, with its length and SHA-256, plus a small C program that checks the embedded
bytes against the model file."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

ALIGN = 16
PER_LINE = 16


def symbol_for(name: str) -> str:
    """A C identifier from a file name: model.tflite -> g_model_tflite."""
    return "g_" + re.sub(r"\W", "_", name).strip("_").lower()


def write_c_array(model: Path, folder: Path, symbol: str | None = None) -> tuple[Path, Path]:
    """Write ``<symbol>.h`` and ``<symbol>.c`` into ``folder``; returns their paths."""
    data = model.read_bytes()
    symbol = symbol or symbol_for(model.name)
    digest = hashlib.sha256(data).hexdigest()
    guard = f"{symbol.upper()}_H"
    header = folder / f"{symbol}.h"
    source = folder / f"{symbol}.c"
    header.write_text(
        f"/* {model.name} embedded by edgekit: {len(data)} bytes, sha256 {digest} */\n"
        f"#ifndef {guard}\n#define {guard}\n\n#include <stddef.h>\n\n"
        f"#define {symbol.upper()}_ALIGN {ALIGN}\n"
        f"extern const unsigned char {symbol}[];\n"
        f"extern const size_t {symbol}_len;\n"
        f"extern const char {symbol}_sha256[];\n\n#endif\n", encoding="ascii")
    rows = (", ".join(f"0x{b:02x}" for b in data[i:i + PER_LINE]) for i in range(0, len(data), PER_LINE))
    source.write_text(
        f'#include "{header.name}"\n\n'
        f"/* aligned so a runtime can read tensors in place (TFLite Micro wants 16) */\n"
        f"_Alignas({ALIGN}) const unsigned char {symbol}[] = {{\n  " + ",\n  ".join(rows) + "\n};\n"
        f"const size_t {symbol}_len = {len(data)};\n"
        f'const char {symbol}_sha256[] = "{digest}";\n', encoding="ascii")
    return header, source


CHECK_PROGRAM = r"""/* Checks that the embedded model equals a model file.
   cc -o check check_model.c SYMBOL.c && ./check MODEL */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "HEADER"

int main(int argc, char **argv) {
  if (argc != 2) { fprintf(stderr, "usage: %s MODEL_FILE\n", argv[0]); return 2; }
  FILE *f = fopen(argv[1], "rb");
  if (!f) { perror(argv[1]); return 2; }
  unsigned char *buf = malloc(SYMBOL_len + 1);
  size_t n = fread(buf, 1, SYMBOL_len + 1, f);
  fclose(f);
  if (n != SYMBOL_len) { printf("length differs: file %zu, embedded %zu\n", n, SYMBOL_len); return 1; }
  if (memcmp(buf, SYMBOL, SYMBOL_len) != 0) { printf("bytes differ\n"); return 1; }
  if (((uintptr_t)SYMBOL) % SYMBOL_ALIGN_MACRO != 0) { printf("not aligned\n"); return 1; }
  printf("ok: %zu bytes, sha256 %s\n", SYMBOL_len, SYMBOL_sha256);
  free(buf);
  return 0;
}
"""


def write_check_program(folder: Path, header: Path, symbol: str) -> Path:
    path = folder / "check_model.c"
    text = CHECK_PROGRAM.replace("HEADER", header.name).replace("SYMBOL_ALIGN_MACRO", f"{symbol.upper()}_ALIGN")
    path.write_text(text.replace("SYMBOL", symbol), encoding="ascii")
    return path
