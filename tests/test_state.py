"""The per-app state is public and found one way: get_state(), with a clear error otherwise."""

import pytest
from flask import Flask

from flask_mpesa_monitor import MPesaMonitor
from flask_mpesa_monitor.state import EXTENSION_KEY, MonitorState, get_state


def test_state_is_public_and_stored_under_the_extension_key():
    app = Flask(__name__)
    monitor = MPesaMonitor(app)
    state = get_state(app)
    assert isinstance(state, MonitorState) and app.extensions[EXTENSION_KEY] is state
    assert state.monitor is monitor
    with app.app_context():
        assert get_state() is state


def test_state_of_an_app_never_initialised_is_a_clear_runtime_error():
    app = Flask("never_initialised")
    with pytest.raises(RuntimeError, match=r"was not initialised on this app \('never_initialised'\); "
                                           r"call MPesaMonitor\(app\) or monitor.init_app\(app\)"):
        get_state(app)
    with app.app_context(), pytest.raises(RuntimeError, match="was not initialised on this app"):
        get_state()


def test_state_outside_an_app_context_names_the_fix():
    with pytest.raises(RuntimeError, match="app_context"):
        get_state()


def test_state_views_of_an_app_never_initialised_fail_with_that_error():
    """The blueprint registered on its own (a mistake) says what is missing."""
    from flask_mpesa_monitor.views import bp

    app = Flask("blueprint_only")
    app.register_blueprint(bp)
    app.testing = True
    with pytest.raises(RuntimeError, match="was not initialised on this app"):
        app.test_client().get("/metrics")


def test_state_summary_rule_registered_after_init_app_applies(tmp_path):
    app = Flask(__name__)
    monitor = MPesaMonitor(app)
    client = app.test_client()
    assert client.get("/metrics/summary").status_code == 200  # no credentials, no rule: open

    @monitor.summary_access
    def nobody(organization):
        return False

    assert client.get("/metrics/summary").status_code == 403
