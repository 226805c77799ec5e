"""carbontrainer: a fast, checkpointing PyTorch MNIST trainer that reports its own energy."""

__version__ = "0.1.0"
