"""The onnx backend, except that exporting fails, after writing, as a converter does on an op it has no rule for."""
from edgekit.backends.onnx import OnnxBackend


class FailingBackend(OnnxBackend):
    name = "failing"

    def export(self, spec, profile, folder, source):
        (folder / "model.onnx.data").write_bytes(b"\0" * 4096)  # what a converter leaves when it fails late
        raise RuntimeError("No conversion rule found for operations: aten::mystery")


BACKEND = FailingBackend()
