"""Files: reading users' inputs (inputs) and writing outputs atomically, as a set, never touching
what is not ours (outputs)."""
