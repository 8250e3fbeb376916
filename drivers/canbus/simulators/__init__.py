"""Simulated CAN devices for `gateway --simulate`."""
