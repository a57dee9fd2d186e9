"""The edge path: the torch-free ``aeguard-edge`` command, INT8 and legacy export variants, the aarch64 check.

- :mod:`aeguard.edge.cli`: ``aeguard-edge score | watch | info`` (numpy + onnxruntime only).
- :mod:`aeguard.edge.variants`: INT8 and opset-17 variants of an artifact, made at the ONNX level (needs onnx).
- :mod:`aeguard.edge.export_cli`: ``aeguard export`` and ``aeguard bench-edge`` (found through the
  ``aeguard.commands`` entry point ``export``).
- ``edge/check.sh`` with :mod:`aeguard.edge.check_score`: ``make edge-check`` (aarch64 parity under qemu) and
  ``make edge-gpu``.

Importing this package loads nothing.
"""
