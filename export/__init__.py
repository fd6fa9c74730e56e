"""Export a trained run's model and loss to TorchScript and ONNX, verified against eager PyTorch."""
