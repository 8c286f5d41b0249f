"""The prompt strings are facts about the models: pin them against the model card's code."""

import ast
import re
from pathlib import Path

from serving import prompts

CARD = (Path(__file__).parents[1] / "data" / "qwen3-embedding-model-card.md").read_text()


def _card_literal(name: str) -> str:
    """The string assigned to `name` in the model card's transformers reranker code."""
    match = re.search(rf"^{name} = (\".*\")$", CARD, flags=re.M)
    assert match, f"{name} not found in the model card"
    return ast.literal_eval(match.group(1))


def test_reranker_prefix_is_the_model_cards():
    assert prompts.RERANK_PREFIX == _card_literal("prefix")


def test_reranker_suffix_is_the_model_cards_with_both_trailing_newlines():
    assert prompts.RERANK_SUFFIX == _card_literal("suffix")
    assert prompts.RERANK_SUFFIX.endswith("</think>\n\n")


def test_reranker_pair_template_is_the_model_cards():
    card = '"<Instruct>: {instruction}\\n<Query>: {query}\\n<Document>: {doc}"'
    assert card in CARD
    assert prompts.RERANK_PAIR_TEMPLATE == ast.literal_eval(card).replace("{doc}", "{document}")


def test_embed_query_template_is_the_model_cards():
    assert "return f'Instruct: {task_description}\\nQuery:{query}'" in CARD
    assert prompts.EMBED_QUERY_TEMPLATE.format(instruction="T", query="q") == "Instruct: T\nQuery:q"


def test_default_instructions_are_the_model_cards():
    assert f"task = '{prompts.DEFAULT_EMBED_INSTRUCTION}'" in CARD
    assert f"instruction = '{prompts.DEFAULT_RERANK_INSTRUCTION}'" in CARD
