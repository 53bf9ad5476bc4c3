"""The whitespace (spacing) experiment: a χ mode on whitespace-run tokens."""
