"""Algorithm selection in parentheses balancing through the LLC (method.md §7)."""
