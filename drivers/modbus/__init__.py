"""Modbus driver: TCP, RTU and RTU-over-TCP through pymodbus; address, codec and planner are pure."""
