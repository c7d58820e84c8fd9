"""The data a model is checked on: the user's (image folders, .npz, text files, factories; ``--calib`` and
``--data``), calibration sets, image preprocessing, and the built-in tasks over the shipped sample data (MNIST,
captions)."""
