"""The Modbus TCP facade: chosen nodes as registers for legacy SCADA, writes through the one write path."""
