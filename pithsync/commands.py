"""Registry of subcommands beyond `verify`; each shell module contributes its own."""

REGISTER: list = []
