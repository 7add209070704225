"""The shared vocabulary every layer above the core speaks: exit codes and the errors that map
to them (exits), the one log format (logfmt), the clock (clock).  Small, with no dependency
beyond the standard library."""
