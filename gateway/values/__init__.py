"""The value path: the tag table, the change feed every stored value leaves through, the write path
every change from outside takes, and the device runners that poll the field."""
