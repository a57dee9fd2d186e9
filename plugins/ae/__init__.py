"""`ae` plugin: plain MLP autoencoder (``torch_model.py``) and its Lightning-trained detector."""
