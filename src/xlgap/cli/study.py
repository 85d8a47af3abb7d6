"""``xlgap run STUDY.toml``: models x data sets x analyses from one file.

A study file names the models, the data sets and the analyses to run on every
(model, data) pair; each analysis section holds the options of its command, checked
against that command's typed config before anything runs, so a typo fails at once with
the key, where it is and the allowed values. Each (model, data, analysis) step runs the
command itself (``sample``, ``intervene``, ``inside``, and ``steer``/``finetune`` when
this xlgap has them) into its own directory ``OUT/<model>/<data>/<analysis>/``, all steps
share one result store, and ``OUT/report.html`` shows the lot (see ``docs/study.md``).

Resuming: a finished step leaves ``.xlgap-step.json`` with its config and is skipped
next time while the config is unchanged; an unfinished step is run again, and the
command resumes its run directory and finds every model call already in the store.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
import sys
import time
import traceback
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from xlgap.cli.config import RunConfig, build_config, config_to_dict, opt, read_config_file
from xlgap.cli.registry import analyses, command, command_line, find_command
from xlgap.data.loaders import is_named_source
from xlgap.data.mapping import parse_data_map
from xlgap.errors import ConfigError, XlgapError
from xlgap.io import dump_json
from xlgap.models import check_model_args, declared, split_spec
from xlgap.progress import StepPlan
from xlgap.provenance import versions as library_versions
from xlgap.report.html import write_report

FORMAT = "study"  # the format tag every result file carries (see xlgap.provenance)
STEP_FORMAT = "study_step"
STEP_MARKER = ".xlgap-step.json"

# Which RunConfig options belong where in a study file.
MODEL_KEYS = ("model", "device", "dtype", "batch_size", "base_url", "api_chat", "api_key_env",
              "model_args", "chat_template", "steer", "steer_layers", "steer_alpha")
DATA_KEYS = ("data", "data_map", "source", "targets", "limit", "on_missing")
STUDY_OWNED = ("model", "data", "out", "store")  # set by the study, not per section
TOP_KEYS = ("title", "out", "store", "analyses", "report", "defaults", "models", "data")


# ------------------------------------------------------------------------------------------
# the study file


@dataclass
class Entry:
    """A model or a data set of the study: its directory name and its options."""

    name: str
    values: dict[str, Any]
    analyses: list[str] | None = None  # a model may restrict the analyses run on it


@dataclass
class Step:
    model: Entry
    data: Entry
    analysis: str
    cls: type
    func: Callable[..., int]
    config: Any
    out: Path
    skip_reason: str = ""

    @property
    def command(self) -> str:
        return command_line(self.analysis, config_to_dict(self.config), self.cls)


@dataclass
class Study:
    path: Path
    title: str
    out: Path
    store: str
    analyses: list[str]
    models: list[Entry]
    data: list[Entry]
    report: bool = True
    steps: list[Step] = field(default_factory=list)


def _allowed(names: typing.Iterable[str]) -> str:
    return ", ".join(sorted(names))


def _check_keys(path: Path, where: str, values: Mapping[str, Any], allowed: typing.Iterable[str],
                hint: str = "") -> None:
    allowed = list(allowed)
    for key in values:
        if key not in allowed:
            raise ConfigError(f"{path}: unknown key {key!r} in {where}; allowed: "
                              f"{_allowed(allowed)}{hint}")


def _check_values(path: Path, where: str, cls: type, values: Mapping[str, Any]) -> None:
    """Types and allowed values, with the key and its place in the file named."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in values.items():
        f = fields.get(key)
        if f is None:
            continue
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            raise ConfigError(f"{path}: {where}.{key} = {value!r} is not allowed; choose one "
                              f"of {', '.join(map(repr, choices))}")
        base = hints[key]
        if typing.get_origin(base) is dict:
            if not isinstance(value, Mapping):
                raise ConfigError(f"{path}: {where}.{key} must be a table, e.g. {key} = "
                                  "{ max_model_len = 4096 }, got " + repr(value))
            continue
        args = [a for a in typing.get_args(base) if a is not type(None)]
        expected = args[0] if args else base
        if expected is str and not isinstance(value, str):
            raise ConfigError(f"{path}: {where}.{key} must be a string, got {value!r}")
        if expected is bool and not isinstance(value, bool):
            raise ConfigError(f"{path}: {where}.{key} must be true or false, got {value!r}")
        if expected in (int, float) and (isinstance(value, bool) or
                                         not isinstance(value, int | float)):
            raise ConfigError(f"{path}: {where}.{key} must be a number, got {value!r}")
        if expected is int and isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"{path}: {where}.{key} must be a whole number, got {value!r}")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "x"


def _entries(path: Path, key: str, raw: Any, main_key: str, allowed: tuple[str, ...]
             ) -> list[Entry]:
    """``[[models]]`` / ``[[data]]`` tables, or a plain list of names."""
    if raw is None:
        raise ConfigError(f"{path}: no {key}; add at least one [[{key}]] table with "
                          f"{main_key} = ...")
    if isinstance(raw, str | Mapping):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{path}: {key} must be a list of [[{key}]] tables or of names")
    entries: list[Entry] = []
    for i, item in enumerate(raw):
        where = f"{key}[{i}]"
        if isinstance(item, str):
            item = {main_key: item}
        if not isinstance(item, Mapping):
            raise ConfigError(f"{path}: {where} must be a table or a name, got {item!r}")
        item = {k.replace("-", "_"): v for k, v in item.items()}
        if key == "data" and isinstance(item.get("map"), Mapping):
            # [data.map]: the same column mapping as data_map = "id=...,prompt=..."
            column_map = parse_data_map(item.pop("map"))
            item["data_map"] = column_map.text() if column_map else ""
        _check_keys(path, where, item, ("name", "analyses", *allowed))
        if main_key not in item:
            raise ConfigError(f"{path}: {where} has no {main_key!r}")
        _check_values(path, where, RunConfig, {k: v for k, v in item.items()
                                               if k not in ("name", "analyses")})
        values = {k: v for k, v in item.items() if k not in ("name", "analyses")}
        spec = str(item[main_key])
        default_name = Path(spec).name if key == "data" and spec not in ("", "builtin") \
            else spec
        name = _slug(str(item.get("name") or default_name))
        only = item.get("analyses")
        if only is not None:
            only = _analysis_list(path, f"{where}.analyses", only)
        entries.append(Entry(name, values, only))
    names = [e.name for e in entries]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"{path}: {key} share the directory name {dup[0]!r}; give each a "
                          "different name = \"...\"")
    return entries


def _analysis_list(path: Path, where: str, raw: Any) -> list[str]:
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise ConfigError(f"{path}: {where} must be a list of names, e.g. [\"sample\", "
                          "\"inside\"]")
    for name in raw:
        if name not in analyses():
            raise ConfigError(f"{path}: {where}: {name!r} is not an analysis; allowed: "
                              f"{', '.join(analyses())}")
    return list(dict.fromkeys(raw))


def _resolve_data(study_path: Path, spec: str) -> str:
    """Relative paths from the current directory, else from the study file's directory."""
    if is_named_source(spec):  # builtin, a catalogue name or hf:...: resolved when loaded
        return spec
    p = Path(spec).expanduser()
    if p.exists() or p.is_absolute():
        return str(p)
    beside = study_path.parent / p
    return str(beside) if beside.exists() else str(p)


def load_study(path: str | Path, *, out: str = "", store: str = "") -> Study:
    """Read and check a study file; every step's config is built (and so validated)
    before anything runs."""
    path = Path(path)
    raw = read_config_file(path)
    # Sections alone run in the canonical order (cheap sampling first); an explicit
    # ``analyses = [...]`` runs in its own order.
    known = analyses()
    analyses_sections = [k for k in known if k in raw]
    _check_keys(path, "the study file", raw, (*TOP_KEYS, *known),
                " (analysis sections: " + ", ".join(known) + ")")
    for key in ("title", "out", "store"):
        if key in raw and not isinstance(raw[key], str):
            raise ConfigError(f"{path}: {key} must be a string, got {raw[key]!r}")
    if "report" in raw and not isinstance(raw["report"], bool):
        raise ConfigError(f"{path}: report must be true or false, got {raw['report']!r}")
    if "analyses" in raw:
        chosen = _analysis_list(path, "analyses", raw["analyses"])
        stray = [a for a in analyses_sections if a not in chosen]
        if stray:
            raise ConfigError(f"{path}: section [{stray[0]}] is not in analyses = "
                              f"{chosen}; add it there or remove the section")
    else:
        chosen = _analysis_list(path, "analysis sections", analyses_sections)
    if not chosen:
        raise ConfigError(f"{path}: no analysis to run; add analyses = [...] or a section "
                          f"such as [sample]; allowed: {', '.join(known)}")
    defaults = raw.get("defaults") or {}
    if not isinstance(defaults, Mapping):
        raise ConfigError(f"{path}: [defaults] must be a table of options")
    defaults = {k.replace("-", "_"): v for k, v in defaults.items()}
    run_keys = [f.name for f in dataclasses.fields(RunConfig) if f.name not in STUDY_OWNED]
    _check_keys(path, "[defaults]", defaults, run_keys)
    _check_values(path, "defaults", RunConfig, defaults)
    models = _entries(path, "models", raw.get("models"), "model", MODEL_KEYS)
    data = _entries(path, "data", raw.get("data"), "data", DATA_KEYS)
    for entry in data:
        entry.values["data"] = _resolve_data(path, str(entry.values["data"]))
        spec = entry.values["data"]
        if not is_named_source(spec) and not Path(spec).exists():
            raise ConfigError(f"{path}: data set {spec!r} (data.{entry.name}) does not exist")
    out_dir = Path(out or raw.get("out") or Path("runs") / _slug(path.stem))
    study = Study(path=path, title=str(raw.get("title") or path.stem), out=out_dir,
                  store=store or str(raw.get("store") or ""), analyses=chosen, models=models,
                  data=data, report=bool(raw.get("report", True)))
    sections: dict[str, dict[str, Any]] = {}
    for name in chosen:
        section = raw.get(name) or {}
        if not isinstance(section, Mapping):
            raise ConfigError(f"{path}: [{name}] must be a table of options")
        section = {k.replace("-", "_"): v for k, v in section.items()}
        found = find_command(name)
        assert found is not None and found.config is not None  # checked by _analysis_list
        cls = found.config
        allowed = [f.name for f in dataclasses.fields(cls) if f.name not in STUDY_OWNED]
        _check_keys(path, f"[{name}]", section, allowed)
        _check_values(path, name, cls, section)
        sections[name] = section
    for m in models:
        for d in data:
            for name in chosen:
                if any(e.analyses is not None and name not in e.analyses for e in (m, d)):
                    continue
                study.steps.append(_make_step(study, m, d, name, defaults, sections[name]))
    if not study.steps:
        raise ConfigError(f"{path}: no step to run: the models' and data sets' own "
                          f"analyses lists leave none of {chosen}")
    return study


def _make_step(study: Study, m: Entry, d: Entry, name: str, defaults: Mapping[str, Any],
               section: Mapping[str, Any]) -> Step:
    found = find_command(name)
    assert found is not None and found.config is not None
    cls, func = found.config, found.func
    names = {f.name for f in dataclasses.fields(cls)}
    out = study.out / m.name / d.name / name
    # Later wins: defaults < data set < model < the analysis section (tables key by key).
    layers = (defaults, d.values, m.values, section)
    values = {k: v for layer in layers for k, v in layer.items()}
    values["out"] = str(out)
    tables = [layer["model_args"] for layer in layers if isinstance(layer.get("model_args"),
                                                                     Mapping)]
    if tables:
        values["model_args"] = {k: v for t in tables for k, v in t.items()}
    if study.store:
        values["store"] = study.store
    values = {k: v for k, v in values.items() if k in names}
    try:
        config = build_config(cls, None, values)
    except ConfigError as exc:
        raise ConfigError(f"{study.path}: step {m.name}/{d.name}/{name}: {exc}") from exc
    model = str(values.get("model", ""))
    try:
        check_model_args(model, getattr(config, "model_args", {}) or {})
    except ConfigError as exc:
        raise ConfigError(f"{study.path}: model {m.name}: {exc}") from exc
    skip = ""
    # decided from the backend's declared capability, before any model is loaded
    if found.white_box and declared(model, "white_box") is False:
        skip = (f"{name} needs a white-box model (hidden states); backend "
                f"{split_spec(model)[0]!r} has none")
    return Step(m, d, name, cls, func, config, out, skip)


# ------------------------------------------------------------------------------------------
# running




def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def _comparable(config: Mapping[str, Any]) -> dict[str, Any]:
    """What decides whether a finished step can be reused (display options aside)."""
    return {k: v for k, v in config.items() if k != "progress"}


def _read_marker(out: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((out / STEP_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _marker(step: Step, status: str, **extra: Any) -> dict[str, Any]:
    return {"format": STEP_FORMAT, "model": step.model.values.get("model"),
            "model_name": step.model.name, "data": step.data.values.get("data"),
            "data_name": step.data.name, "analysis": step.analysis, "status": status,
            "command": step.command, "config": config_to_dict(step.config),
            "versions": dict(library_versions()), **extra}


def run_study(study: Study, *, redo: bool = False, keep_going: bool = True,
              stream: typing.TextIO | None = None) -> dict[str, Any]:
    """Run every step (skipping those finished with the same config), write
    ``OUT/study.json`` after each (``xlgap run`` then draws ``OUT/report.html``)."""
    stream = stream or sys.stderr
    study.out.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {
        "format": FORMAT, "format_version": 1, "title": study.title, "config_file": str(study.path),
        "out": str(study.out), "started": _now(), "status": "running",
        "versions": dict(library_versions()), "steps": [
            {"model": s.model.name, "data": s.data.name, "analysis": s.analysis,
             "dir": str(s.out.relative_to(study.out)), "command": s.command,
             "status": "pending"} for s in study.steps]}
    dump_json(record, study.out / "study.json")
    plan = StepPlan(len(study.steps), stream=stream, label="xlgap run")
    failed = 0
    try:
        for step, rec in zip(study.steps, record["steps"], strict=True):
            name = f"{step.model.name} x {step.data.name} x {step.analysis}"
            with plan.step(name) as info:
                status, detail = _run_step(step, redo, stream)
                info["status"] = status
                info["skipped"] = status in ("skipped", "done earlier")
            rec.update({"status": status, "seconds": round(info["seconds"], 2)})
            if detail:
                rec["error" if status == "failed" else "note"] = detail
            dump_json(record, study.out / "study.json")
            if status == "failed":
                failed += 1
                print(f"[xlgap run] {name} failed: {detail}", file=stream, flush=True)
                if not keep_going:
                    break
    except BaseException:
        record["status"] = "interrupted"
        record["finished"] = _now()
        dump_json(record, study.out / "study.json")
        raise
    record["status"] = "failed" if failed else "done"
    record["finished"] = _now()
    dump_json(record, study.out / "study.json")
    return record


def _run_step(step: Step, redo: bool, stream: typing.TextIO) -> tuple[str, str]:
    """Run one step; returns (status, detail). Failures are recorded, not raised, so one
    bad step does not stop a night's study (``KeyboardInterrupt`` still stops it)."""
    if step.skip_reason:
        return "skipped", step.skip_reason
    old = _read_marker(step.out)
    config = config_to_dict(step.config)
    if not redo and old and old.get("status") == "done" and \
            _comparable(old.get("config") or {}) == _comparable(config):
        return "done earlier", "finished by an earlier run with the same options"
    changed = ""
    if old and isinstance(old.get("config"), Mapping):
        before, now = _comparable(old["config"]), _comparable(config)
        diffs = [f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in sorted(set(before) |
                 set(now)) if before.get(k) != now.get(k)]
        if diffs:
            changed = f"options changed since the last run ({'; '.join(diffs)})"
    step.out.mkdir(parents=True, exist_ok=True)
    started, t0 = _now(), time.monotonic()
    dump_json(_marker(step, "running", started=started), step.out / STEP_MARKER)
    print(f"[xlgap run] {step.command}", file=stream, flush=True)
    status, detail = "done", ""
    try:
        code = step.func(dataclasses.replace(step.config))
        if code:
            status, detail = "failed", f"the command returned exit code {code}"
    except XlgapError as exc:
        status, detail = "failed", str(exc)
    except KeyboardInterrupt:
        dump_json(_marker(step, "interrupted", started=started), step.out / STEP_MARKER)
        raise
    except Exception as exc:  # a bug in one analysis must not lose the others
        status, detail = "failed", f"{exc.__class__.__name__}: {exc} (traceback in " \
            f"{step.out / 'error.txt'})"
        (step.out / "error.txt").write_text(traceback.format_exc(), encoding="utf-8")
    if changed and status == "failed":
        detail = f"{changed}: {detail}; delete {step.out} to redo this step with the new " \
            "options"
    elif changed:
        detail = changed
    dump_json(_marker(step, status, started=started, finished=_now(),
                      seconds=round(time.monotonic() - t0, 2),
                      **({"error": detail} if detail else {})), step.out / STEP_MARKER)
    return status, detail


# ------------------------------------------------------------------------------------------
# the command


@dataclass
class StudyConfig:
    positional: ClassVar[tuple[str, str]] = ("study", "?")

    study: str = opt("", "the study file (TOML or JSON): models, data sets, analyses "
                     "(see examples/ and docs/study.md)")
    out: str = opt("", "output directory (default: the study's out, else runs/<file name>)")
    store: str = opt("", "result store shared by every step (default: the study's store, "
                     "else $XLGAP_CACHE/store)")
    redo: bool = opt(False, "run every step again, even those an earlier run finished "
                     "(model calls still come from the store)")
    keep_going: bool = opt(True, "go on with the other steps when one fails "
                           "(--no-keep-going: stop at the first failure)")
    dry_run: bool = opt(False, "check the study file and print its steps and commands, "
                        "without running anything")


def format_plan(study: Study) -> str:
    lines = [f"study {study.title!r}: {len(study.models)} model(s) x {len(study.data)} data "
             f"set(s) x {len(study.analyses)} analyses = {len(study.steps)} steps; "
             f"results in {study.out}"]
    for i, step in enumerate(study.steps, 1):
        tail = f"   (skipped: {step.skip_reason})" if step.skip_reason else ""
        lines.append(f"  {i:>2}. {step.command}{tail}")
    return "\n".join(lines)


@command("run", StudyConfig)
def cmd_run(cfg: StudyConfig) -> int:
    if not cfg.study:
        raise ConfigError("xlgap run STUDY.toml: give the study file (see examples/)")
    study = load_study(cfg.study, out=cfg.out, store=cfg.store)
    print(format_plan(study), file=sys.stderr)
    if cfg.dry_run:
        return 0
    record = run_study(study, redo=cfg.redo, keep_going=cfg.keep_going)
    if study.report:
        # The runner writes results only; the page is drawn here, at the command level.
        path = write_report([study.out], study.out / "report.html", study.title)
        record["report"] = str(path)
        dump_json(record, study.out / "study.json")
        print(f"[xlgap run] report: {path}", file=sys.stderr, flush=True)
    failed = [s for s in record["steps"] if s["status"] == "failed"]
    done = sum(s["status"] in ("done", "done earlier") for s in record["steps"])
    print(f"[xlgap run] {done} of {len(record['steps'])} steps done, {len(failed)} failed; "
          f"results in {study.out}", file=sys.stderr)
    for s in failed:
        print(f"  failed: {s['model']} x {s['data']} x {s['analysis']}: {s.get('error')}",
              file=sys.stderr)
    return 1 if failed else 0
