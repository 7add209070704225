from pithsync.cli import main

# Guarded: worker processes (anyio.to_process) import the parent's main module, and must not
# start a second run of the command.
if __name__ == "__main__":
    raise SystemExit(main())
