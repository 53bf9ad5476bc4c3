"""Reports: plots (matplotlib set up once, in ``pyplot``) and Markdown tables.

May import every other package of the core except experiments; experiments render their
reports through it.
"""
