"""Coverage-guided fuzzing (atheris, libFuzzer) of the user-file loaders and the request/manifest/graph parsers.

Not a pytest file: ``make fuzz-atheris`` runs it for a bounded number of inputs (``-runs=N``). A crash is any
exception other than the documented ones; libFuzzer writes the input that caused it to ``crash-*``.
"""

from __future__ import annotations

import os
import sys
import tempfile

import atheris

with atheris.instrument_imports():
    from aeguard.core.artifact import parse_manifest
    from aeguard.core.graphcheck import inspect_graph
    from aeguard.datasets.loaders import load_table
    from aeguard.serving import inputs

NAMES = ["s0", "s1", "s2", "s3"]
TMP = tempfile.mkdtemp(prefix="aeguard-atheris-")
SUFFIXES = (".csv", ".npz", ".parquet")


def one(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    target = fdp.ConsumeIntInRange(0, 6)
    payload = fdp.ConsumeBytes(fdp.remaining_bytes())
    try:
        if target <= 2:
            path = os.path.join(TMP, "input" + SUFFIXES[target])
            with open(path, "wb") as fh:
                fh.write(payload)
            load_table(path)
        elif target == 3:
            data, _ = inputs.split_json_body(inputs.load_json(payload))
            inputs.matrix_from_json(data, NAMES, max_rows=5)
        elif target == 4:
            inputs.matrix_from_npy(payload, NAMES, max_rows=5)
        elif target == 5:
            parse_manifest(payload)
        else:
            inspect_graph(payload)
    except (ValueError, ImportError):  # RequestError, ArtifactError, GraphError, ParserError: all ValueErrors
        pass


if __name__ == "__main__":
    atheris.Setup(sys.argv, one)
    atheris.Fuzz()
