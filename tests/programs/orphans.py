"""Leave N orphaned zombies behind: fork N children that exit at once, then exit ourselves.

The children are zombies of this process until it exits; then the kernel hands them to the
nearest subreaper or PID 1, which must reap them. Writes DONE_FILE (if given) just before exiting.
"""
import os
import sys

count = int(sys.argv[1])
done_file = sys.argv[2] if len(sys.argv) > 2 else None
for _ in range(count):
    if os.fork() == 0:
        os._exit(0)
if done_file:
    with open(done_file, "w") as f:
        f.write(str(os.getpid()))
os._exit(0)
