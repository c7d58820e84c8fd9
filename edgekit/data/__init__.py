"""Sample data readers: real MNIST digits as PNG files and the captions of the fusion task."""
