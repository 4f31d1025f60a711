"""kernlet's benchmarks: each figure measured against its floor in the same run.

Run them with ``kernlet bench`` (``--quick`` for a short pass); see docs/performance.md.
This package lives beside ``src/`` (it is not installed); ``kernlet bench`` finds it in the
source checkout.
"""
