"""Modbus driver: TCP, RTU and RTU-over-TCP through pymodbus; address, codec and planner are pure."""

from gateway.drivers.modbus import driver as driver  # registers the modbus+* schemes
