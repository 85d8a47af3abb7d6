"""The OpenAI-compatible backend (``--model openai:NAME``), in three parts:

* :mod:`~xlgap.models.openai.http`: the HTTP client, retries (tenacity, honouring
  ``Retry-After``) and the rule that keeps the API key on its server across redirects;
* :mod:`~xlgap.models.openai.echo`: scoring from echoed prompt log-probabilities (pure);
* :mod:`~xlgap.models.openai.backend`: :class:`OpenAIBackend`, the backend itself.
"""

from xlgap.models.openai.backend import (
    CANNOT_SCORE,
    PROBE_TEXT,
    OpenAIBackend,
    ScoringUnsupported,
    derive_seed,
    parse_choices,
)
from xlgap.models.openai.echo import EchoLayout, echo_layout, joint_scores
from xlgap.models.openai.http import (
    MAX_REDIRECTS,
    HTTPStatusError,
    backoff_delay,
    normalise_base_url,
    parse_retry_after,
    same_server,
    wait_retry_after,
)

__all__ = ["CANNOT_SCORE", "MAX_REDIRECTS", "PROBE_TEXT", "EchoLayout", "HTTPStatusError",
           "OpenAIBackend", "ScoringUnsupported", "backoff_delay", "derive_seed",
           "echo_layout", "joint_scores", "normalise_base_url", "parse_choices",
           "parse_retry_after", "same_server", "wait_retry_after"]
