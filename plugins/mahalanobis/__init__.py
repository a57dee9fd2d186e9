"""`mahalanobis` plugin: autoencoder with a linear latent (``torch_model.py``) scored by the latent Mahalanobis
distance plus the reconstruction error (``detector.py``; Denouden et al., arXiv 1812.02765)."""
