"""Inference backends behind one interface (torch, onnxruntime, TensorRT), export and engine cache."""
