"""Support code of ``benchmarks/e2e.py`` (issue 12): trivial plugins, the Celery peer app,
private redis-server instances, per-process CPU accounting, round-trip counting and a fallback
Interlock worker entry point. Nothing here is imported by the library.
"""
