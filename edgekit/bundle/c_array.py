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
    """A C identifier from a file name: model.bin -> g_model_bin."""
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


CHECK_PROGRAM = r"""/* Checks that each embedded model file equals the file on disk (bytes, length, 16-byte alignment).
   cc -o check_model check_model.c g_*.c && ./check_model FILES (in the order of EMBEDDED below) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
INCLUDES
/* the length by address: an extern const is not a constant expression in C */
static const struct {
  const char *name;
  const unsigned char *data;
  const size_t *len;
  const char *sha256;
} EMBEDDED[] = {
ENTRIES
};
#define COUNT (sizeof(EMBEDDED) / sizeof(EMBEDDED[0]))

static int check(const char *path, size_t i) {
  FILE *f = fopen(path, "rb");
  if (!f) { perror(path); return 2; }
  unsigned char *buf = malloc(*EMBEDDED[i].len + 1);
  size_t n = fread(buf, 1, *EMBEDDED[i].len + 1, f);
  fclose(f);
  int bad = 0;
  if (n != *EMBEDDED[i].len) {
    printf("%s: length differs: file %zu, embedded %zu\n", EMBEDDED[i].name, n, *EMBEDDED[i].len);
    bad = 1;
  }
  else if (memcmp(buf, EMBEDDED[i].data, n) != 0) { printf("%s: bytes differ\n", EMBEDDED[i].name); bad = 1; }
  else if (((uintptr_t)EMBEDDED[i].data) % 16 != 0) { printf("%s: not aligned\n", EMBEDDED[i].name); bad = 1; }
  else printf("ok: %s %zu bytes, sha256 %s\n", EMBEDDED[i].name, n, EMBEDDED[i].sha256);
  free(buf);
  return bad;
}

int main(int argc, char **argv) {
  if ((size_t)argc != COUNT + 1) { fprintf(stderr, "usage: %s FILE x %zu\n", argv[0], (size_t)COUNT); return 2; }
  int bad = 0;
  for (size_t i = 0; i < COUNT; i++) bad |= check(argv[i + 1], i);
  return bad;
}
"""


def write_check_program(folder: Path, embedded: list[tuple[str, Path, str]]) -> Path:
    """``embedded``: (file name, header, symbol) of each array, in the order the program takes the files."""
    path = folder / "check_model.c"
    includes = "\n".join(f'#include "{header.name}"' for _, header, _ in embedded)
    entries = ",\n".join(f'  {{"{name}", {symbol}, &{symbol}_len, {symbol}_sha256}}' for name, _, symbol in embedded)
    path.write_text(CHECK_PROGRAM.replace("INCLUDES", includes).replace("ENTRIES", entries), encoding="ascii")
    return path
