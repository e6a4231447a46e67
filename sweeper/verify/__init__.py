"""Proving a sweep's results: recompute, compare, seal. No Ray.

- ``seal``: the ``SHA256SUMS`` manifest of every result file a sweep wrote, and its check.
- ``evidence``: one run read from its files (each once), its fingerprint recomputed from them,
  and what in its record does not match them.
- ``comparison``: the one comparison of two runs and the one environment difference.
- ``analysis``: the verification of a whole sweep folder (``invae-verify``).
- ``records``: the typed verification tree, as ``verification.json`` holds it.
- ``verdict``: the verdict for a terminal; ``report``: the same as markdown and HTML.
- ``reproduce``: rerun a recorded run here and compare (``invae-reproduce``).
"""
