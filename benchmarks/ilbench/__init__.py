"""Support code of ``benchmarks/run.py``: graph shapes, the synchronous driver, the baselines,
the adapter set-ups and the report. Not part of the installed ``interlock`` distribution."""
