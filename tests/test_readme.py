"""The strategy list of docs/strategies.md is what ``--list-strategies`` prints, so the two cannot drift apart."""
import re
from pathlib import Path

from bench.cli import list_strategies

STRATEGIES_DOC = Path(__file__).resolve().parent.parent / "docs" / "strategies.md"


def documented_strategy_block() -> str:
    text = STRATEGIES_DOC.read_text()
    match = re.search(r"`python run_bench.py --list-strategies`:\n\n```text\n(.*?)\n```", text, re.S)
    assert match, "docs/strategies.md lost its --list-strategies block"
    return match.group(1)


def test_strategies_doc_lists_exactly_what_list_strategies_prints():
    assert documented_strategy_block() == list_strategies()
