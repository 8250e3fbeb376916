"""What happens in the gateway that others must learn of: for now the audit trail of writes and calls."""
