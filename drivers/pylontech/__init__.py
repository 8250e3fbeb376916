"""Pylontech battery stacks through their RS-232 console (pyserial): the `pwr` and `bat` tables; a console simulator."""

from gateway.drivers.pylontech import driver as driver  # registers the pylontech scheme
