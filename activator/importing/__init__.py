"""`activator import`: Circus, supervisord and systemd configurations → unit files (SPEC §12).

Each format has its reader (circus.py, supervisord.py, systemd.py), which turns files into
`ImportedUnit`s (model.py): activator keys as plain values, plus what could not be carried
over and why. writer.py formats a unit as YAML in SPEC's key order; command.py recognises each
file's format from its content, runs the readers, and writes nothing unless every input could
be read. This package is imported only by this command, never by the init.
"""
