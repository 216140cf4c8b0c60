"""Input lines for users' own LAMMPS scripts (strings; nothing here runs LAMMPS)."""
