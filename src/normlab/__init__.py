"""normlab: classic convolutional networks and normalization layers, written from scratch.

`from normlab import d2l` runs the book's chapter code (see normlab/d2l.py).

Packages: `normlab.nn` (the normalization layers, from scratch), `normlab.data` (Fashion-MNIST/
MNIST, in-memory loaders), `normlab.models` (the book's networks), `normlab.train` (the loop),
`normlab.inspect` (a look inside), `normlab.run` (a run directory), `normlab.experiments`
(studies), `normlab.cli` (the `normlab` command). The layers, what each may import and the
public names: docs/architecture.md.
"""
__version__ = "0.1.0"
