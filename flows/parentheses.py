"""The ``parentheses`` flow: algorithm selection in parentheses balancing (method.md §7).

Trains many classifiers whose training data both rules (Nested, Equal-Count) explain,
estimates the LLC and group susceptibilities of each kind of solution, re-weights the
data groups to lower λ(Nested) relative to λ(Equal-Count), retrains, and reports the
fraction of seeds learning each rule before and after (``tasks/parentheses.py``).
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from patterning_core.workspace import patterning_home, settings_digest
from tasks.parentheses import DEFAULT_SETTINGS, build_config, parentheses_experiment


def check_parentheses_parameters(settings: dict[str, Any] | None = None, **_: object) -> None:
    """Refuse unknown or invalid settings before anything runs."""
    build_config(settings or {})


@flow(name="parentheses")
def parentheses(settings: dict[str, Any] | None = None, out_dir: str | None = None) -> dict:
    """Run the experiment with ``settings`` (keys of ``DEFAULT_SETTINGS``) into ``out_dir``
    (default ``$PATTERNING_HOME/parentheses/<digest of the settings>``)."""
    settings = {**DEFAULT_SETTINGS, **(settings or {})}
    check_parentheses_parameters(settings)
    if out_dir is None:
        out_dir = str(patterning_home() / "parentheses" / settings_digest(settings))
    return parentheses_experiment(settings, out_dir)
