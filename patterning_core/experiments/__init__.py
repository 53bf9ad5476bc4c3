"""One subpackage per experiment: its science, testable without Prefect. Tasks in
``tasks/`` call these functions; flows in ``flows/`` chain the tasks.

An experiment may import every other package of the core.
"""
