"""Text to vectors: the encoder API, its torch and ONNX backends, model loading and the model registry."""
