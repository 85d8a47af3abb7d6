"""Prompts (few-shot completions for base models, chat templates for chat models) and the
mapping of free-text answers back to answer concepts."""

from xlgap.prompting.answers import OTHER, answer_matches, map_answer, normalize
from xlgap.prompting.templates import PromptBuilder, ScoringPrompt

__all__ = ["OTHER", "PromptBuilder", "ScoringPrompt", "answer_matches", "map_answer",
           "normalize"]
