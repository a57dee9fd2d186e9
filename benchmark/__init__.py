"""aeguard's offline benchmark harness: label-free protocol, cells run on joblib/Dask/Ray, Markdown/HTML report.

``make_split`` and ``parse_detector_spec`` (in :mod:`aeguard.benchmark.protocol`) are the shared protocol for
every aeguard evaluation; importing this package loads only numpy.
"""

from .protocol import BASELINES, FIT_CAP, TEST_SIZE, make_split, parse_detector_list, parse_detector_spec

__all__ = ["BASELINES", "FIT_CAP", "TEST_SIZE", "make_split", "parse_detector_list", "parse_detector_spec"]
