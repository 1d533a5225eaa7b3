"""normlab: classic convolutional networks and normalization layers, written from scratch.

`from normlab import d2l` runs the book's chapter code (see normlab/d2l.py).

Subpackages: `normlab.data` (Fashion-MNIST/MNIST and fast in-memory loaders); the layers,
models, trainer and studies follow the layout in DESIGN.md.
"""
__version__ = "0.1.0"
