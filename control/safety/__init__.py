"""Safety interlocks: evaluated on every change of their inputs and every cycle, latched, reset by an operator.

A Bad input, or one older than the site's maximum age, counts as tripped: an interlock that cannot see
its cause must assume it. A trip forces the site's safe setpoints at once (not on the next cycle) and
stays until an operator resets it after the cause is gone. No mode can disable an interlock.
"""

from gateway.control.safety.interlock import KINDS, Interlock, InterlockSpec, make_interlock
from gateway.control.safety.supervisor import SafetySupervisor

__all__ = ["KINDS", "Interlock", "InterlockSpec", "SafetySupervisor", "make_interlock"]
