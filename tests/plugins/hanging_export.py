"""The onnx backend, except that its converter never returns, after writing half a model."""
import os
import time

from edgekit.backends.onnx import OnnxBackend


class HangingExportBackend(OnnxBackend):
    name = "hanging-export"

    def export(self, spec, profile, folder, source):
        (folder / "model.onnx").write_bytes(b"half a model")
        if os.environ.get("EDGEKIT_TEST_PIDFILE"):  # for the test that checks the worker is gone
            with open(os.environ["EDGEKIT_TEST_PIDFILE"], "w") as f:
                f.write(str(os.getpid()))
        while True:
            time.sleep(1)


BACKEND = HangingExportBackend()
