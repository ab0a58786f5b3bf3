"""Inference backends behind one interface (torch, onnxruntime, TensorRT), ONNX export, engine
cache, and the warm-start / prefix planner. Nothing here imports ROS."""
