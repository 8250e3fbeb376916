"""Simulators of field devices shared by every protocol: physical models of the plant."""
