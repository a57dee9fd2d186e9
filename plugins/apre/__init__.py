"""`apre` plugin: probabilistic autoencoder (``torch_model.py``), its detector (``detector.py``) with mean-shift
scoring from ``aeguard.plugins.mss``, and the authors' label-assisted protocol for the benchmark
(``paper_protocol.py``)."""
