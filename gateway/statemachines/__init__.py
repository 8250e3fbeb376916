"""Part 16 finite state machines declared in the site, served and driven (by programs and method calls)."""
