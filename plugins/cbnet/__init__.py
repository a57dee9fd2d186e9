"""`cbnet` plugin: CBNet-style converting autoencoder + lightweight classifier (``docs/cbnet.md``)."""
