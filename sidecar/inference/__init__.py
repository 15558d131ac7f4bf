"""Models: the manifest that describes them and the ONNX Runtime session."""
