"""xlgap: measure, explain and reduce the cross-lingual gap of language models."""

__version__ = "0.1.0"
