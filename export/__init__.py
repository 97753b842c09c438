"""torch -> ONNX export: one self-contained file with the preprocessing inside the graph."""
