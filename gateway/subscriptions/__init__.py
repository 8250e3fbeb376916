"""Subscriptions and monitored items, from a stored value to the bytes of a PublishResponse."""
