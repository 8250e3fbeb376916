"""SCPI driver (pyvisa, pyvisa-py): queries as addresses, write templates, the error queue checked after writes."""

from gateway.drivers.scpi import driver as driver  # registers the visa scheme
