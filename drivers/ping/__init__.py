"""Ping driver: is a host reachable, and how fast (ICMP echo, or a TCP connect)."""

from gateway.drivers.ping import driver as driver  # registers the ping scheme
