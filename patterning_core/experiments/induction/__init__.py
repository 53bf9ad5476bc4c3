"""Induction circuit: prefix-matching metrics, and patterning its formation."""
