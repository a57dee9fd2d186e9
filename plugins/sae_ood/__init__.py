"""`sae_ood` plugin: TopK sparse autoencoder with code-space OOD scoring (SAE-feature OOD, aeguard scoring)."""
