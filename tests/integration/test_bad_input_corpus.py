"""Every bad input of the corpus (tests/bad_inputs/*.yaml) through the real `cdcflow` command (issue 17,
item 3): a non-zero exit, no traceback, a short message that names the place (file and key or line,
the variable, the option, the parameter). The cases run side by side, each in its own folder with an
isolated config, so a command that wrongly accepts its input touches nothing another test uses.
"""

from __future__ import annotations

from collections import Counter

import pytest

from tests.support.bad_inputs import CORPUS_DIR, Case, Outcome, load_corpus, run_corpus

CASES = load_corpus()
AREAS = {"config_files", "env_overrides", "plugin_manifests", "params", "events", "cli_options"}


@pytest.fixture(scope="module")
def outcomes(request: pytest.FixtureRequest) -> dict[str, Outcome]:
    """The outcomes of the selected cases, all run at once (4 at a time) on first use."""
    selected = [
        item.callspec.params["case"]
        for item in request.session.items
        if item.module is request.module and hasattr(item, "callspec")
    ]
    return run_corpus(selected or CASES, workers=4)


def test_the_corpus_covers_every_area_with_150_cases() -> None:
    areas = Counter(case.source.removesuffix(".yaml") for case in CASES)
    assert set(areas) == AREAS, f"areas in {CORPUS_DIR}: {sorted(areas)}"
    assert len(CASES) >= 150, f"{len(CASES)} cases"


# The first test runs every case (about 2 minutes, 4 at a time, more on a loaded machine).
@pytest.mark.timeout(900)
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_a_bad_input_gets_one_clear_error(case: Case, outcomes: dict[str, Outcome]) -> None:
    outcome = outcomes[case.id]
    assert outcome.verdict == "clear", (
        f"{case.id} ({case.source}): {outcome.why}; exit code {outcome.returncode}; output:\n{outcome.output}"
    )
