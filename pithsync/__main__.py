from pithsync.cli import program

# Guarded: a process that imports the main module (multiprocessing and anyio workers do) must
# not start a second run of the command.
if __name__ == "__main__":
    raise SystemExit(program())
