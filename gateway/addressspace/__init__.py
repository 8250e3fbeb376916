"""The server's address space as a whole: how namespace 0 gets into it at start."""
