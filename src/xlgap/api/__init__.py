"""The Python API: one call per step of a study, all reachable as ``xlgap.<name>``.

One calling convention: ``f(backend, data, *, source, targets, out=None, **options)``, where
``options`` are the fields of the step's options dataclass (the same ones the command's
flags are built from), lists are lists (never comma strings), and every analysis returns
a :class:`~xlgap.results.Result` (one tidy ``to_frame()`` schema for all of them). ``out``
writes the files the command writes, so the report and ``load_result`` read them.

The functions live in modules by weight (:mod:`.backends`, :mod:`.runs`, :mod:`.inside`,
:mod:`.experiments` (torch), :mod:`.report`); ``xlgap``'s lazy top level imports only the
module a name needs, and this package imports none of them.
"""
