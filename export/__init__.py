"""torch -> ONNX export with the preprocessing inside the graph (not written yet)."""
