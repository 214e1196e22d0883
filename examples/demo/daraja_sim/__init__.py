"""A local stand-in for Safaricom Daraja: OAuth, M-Pesa Express (STK push), STK query."""

from .simulator import *  # noqa: F401,F403
from .simulator import __all__  # noqa: F401
