"""MQTT driver (aiomqtt): topics, JSON pointers into payloads, command topics with request/response."""

from gateway.drivers.mqtt import driver as driver  # registers the mqtt scheme
