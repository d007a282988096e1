"""Running a trained model: the model file, the one predictor, batch prediction, micro-batching, ONNX."""
