"""The onnx backend, except that exporting fails as a converter does on an op it has no rule for."""
from edgekit.backends.onnx import OnnxBackend


class FailingBackend(OnnxBackend):
    name = "failing"

    def export(self, spec, profile, folder, source):
        raise RuntimeError("No conversion rule found for operations: aten::mystery")


BACKEND = FailingBackend()
