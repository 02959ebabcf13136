"""The README's strategy list is what ``--list-strategies`` prints, so the two cannot drift apart."""
import re
from pathlib import Path

from bench.cli import list_strategies

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_strategy_block() -> str:
    text = README.read_text()
    match = re.search(r"`python run_bench.py --list-strategies`:\n\n```text\n(.*?)\n```", text, re.S)
    assert match, "README lost its --list-strategies block"
    return match.group(1)


def test_readme_lists_exactly_what_list_strategies_prints():
    assert readme_strategy_block() == list_strategies()
