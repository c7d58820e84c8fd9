"""The onnx backend, except that opening a model aborts the process (as LiteRT did in allocate_tensors)."""
import os

from edgekit.backends.onnx import OnnxBackend


class CrashingBackend(OnnxBackend):
    name = "crashing"

    def open(self, folder, manifest, threads=None):
        os.abort()


BACKEND = CrashingBackend()
