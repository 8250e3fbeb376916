"""OptoMMP driver: Opto 22's memory-mapped protocol over TCP (analog and digital points, scratchpad, any address)."""

from gateway.drivers.optommp import driver as driver  # registers the optommp scheme
