"""Settings for every test directory."""

from hypothesis import settings

# no timed assertions (the project's rule): Hypothesis's per-example deadline (200 ms) fails
# property tests on a loaded machine (a 1.07 s example in 6.5 s of GC, 2 shared cores)
settings.register_profile("kernlet", deadline=None)
settings.load_profile("kernlet")
