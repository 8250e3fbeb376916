"""Control: controllers that read nodes and steer the plant through the gateway's one write path.

Each control cycle takes a process image of the nodes the controllers declared (value, status, age),
runs the enabled controllers in priority order (safety interlocks first, then limits, grid support, the
active mode), arbitrates their constraints per setpoint (`=`, `<=`, `>=`), applies the ramp limit and
writes each changed setpoint once through the write path as `control:<controller>`. Interlocks also act
on the change of their inputs itself, not only on the next cycle.
"""
