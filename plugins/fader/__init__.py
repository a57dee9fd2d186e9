"""`fader` plugin: FADeR-style inpainting autoencoder with feature attenuation on the skips (``torch_model.py``),
trained in two stages with the base frozen in the second (``detector.py``); spec ``fader.md``, docs
``docs/fader.md``. The paper's internals are not public: the mechanism is aeguard design."""
