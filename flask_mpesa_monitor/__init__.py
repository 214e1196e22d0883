"""flask-mpesa-monitor: monitoring and alerting for multi-tenant M-Pesa Flask servers.

>>> from flask import Flask
>>> from flask_mpesa_monitor import MPesaMonitor
>>> monitor = MPesaMonitor(Flask(__name__))
"""

from . import metrics
from ._version import __version__
from .alerts import AlertLevel
from .b2c import AsyncResult, InvalidResult
from .c2b import ConfirmationResult, InvalidConfirmation
from .config import MonitorConfig
from .extension import MPesaMonitor
from .instrument import monitor_database_operation, monitor_mcp_tool, monitor_mpesa_operation
from .state import MonitorState, get_state
from .transactions import CallbackResult, InvalidCallback

__all__ = [
    "AlertLevel",
    "AsyncResult",
    "CallbackResult",
    "ConfirmationResult",
    "InvalidCallback",
    "InvalidConfirmation",
    "InvalidResult",
    "MPesaMonitor",
    "MonitorConfig",
    "MonitorState",
    "__version__",
    "get_state",
    "metrics",
    "monitor_database_operation",
    "monitor_mcp_tool",
    "monitor_mpesa_operation",
]
