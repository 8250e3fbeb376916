"""CAN driver: DBC signals (cantools) on any python-can bus, pushed as frames arrive; a BMS rack simulator."""

from gateway.drivers.canbus import driver as driver  # registers the can scheme
