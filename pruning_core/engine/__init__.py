"""The engine: prunable tensors and masks, the scoring methods, `prune`, the models, the datasets and `train`."""
