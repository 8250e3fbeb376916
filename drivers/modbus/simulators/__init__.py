"""Modbus simulators: pymodbus servers with sparse register maps, and the site simulation for --simulate."""
