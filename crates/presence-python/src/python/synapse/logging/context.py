"""`synapse.logging.context`: the background helpers some modules import directly.

The reference's log contexts do not exist here: `make_deferred_yieldable` returns its
argument, and `run_in_background` starts the function on Presenced's module event loop.
"""

from synapse import _presenced


def run_in_background(f, *args, **kwargs):
    """Calls `f` now and lets whatever it returns finish in the background."""
    return _presenced.current_host().run_in_background(f, *args, **kwargs)


def make_deferred_yieldable(deferred):
    return deferred
