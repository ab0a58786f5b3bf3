"""The controller core under the node (`controller`: built from settings, a URDF and a model
artifact), inference backends behind one interface (torch, onnxruntime, TensorRT), the inference
worker and process, ONNX export, engine cache, and the warm-start / prefix planner. Nothing here
imports ROS."""
