"""Development tooling that the tests (``tests/``) and the benchmarks (``bench/``) share.

Not part of the installed package: the wheel holds ``timebank_realtime`` only. Importable from a checkout:
pytest puts the checkout's root on the path, and ``bench/_harness.py`` does the same for the benchmarks.
"""
