"""Alarms and Conditions (OPC UA Part 9): declarations read from the site, evaluation on every change of an
input, the condition state model, and the methods clients operate alarms with."""
