"""Launch: package, upload once, build once, run, forward and sync a notebook."""
