"""Launchers for the real servers the tests, the benchmarks and the local stack run."""

from .process import *  # noqa: F401,F403
from .process import __all__  # noqa: F401
from .process import _find_pg_bin  # noqa: F401  (examples/demo/localstack.py --down)
