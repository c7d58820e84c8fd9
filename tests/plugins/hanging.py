"""The onnx backend, except that running a model never returns."""
import time

from edgekit.backends.onnx import OnnxBackend


class _Hanging:
    def run(self, inputs):
        while True:
            time.sleep(1)


class HangingBackend(OnnxBackend):
    name = "hanging"

    def open(self, folder, manifest, threads=None):
        return _Hanging()


BACKEND = HangingBackend()
