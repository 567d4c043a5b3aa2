"""The workspace files that may run a document's classes, found from their text alone.

A job's driver is chosen from the whole workspace's index (drivers.py), and building it takes
seconds on a large workspace (~10 s for 1,500 files here): a model file run by `train.py`
showed no shapes until then. But a file can only run the document's classes by importing
something: one of the classes, a function of the document that builds one, or, further off,
something of a file that does (a factory function, a wrapper model, a trainer); and the import
names the module and the thing in the file's text. So the files are searched, not parsed: for
the document's top-level names first, then for the names of each file found, round after
round. Indexing only the files found gives the whole index's choice in all but rare cases (a
class reached through a name built at run time); the server checks it against the whole index
once the scan ends.

Pure: texts in, paths out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

MAX_FILES = 150  # names this widespread: wait for the whole index instead
_IMPORT_LINE = re.compile(r"^[ \t]*(?:from|import)[ \t].*$", re.MULTILINE)
_FROM_IMPORT = re.compile(r"^[ \t]*from[ \t]+(\.*)([\w.]*)[ \t]+import[ \t]+\(?([\w \t,]*)", re.MULTILINE)
_IMPORT = re.compile(r"^[ \t]*import[ \t]+([\w. \t,]+)", re.MULTILINE)
_WORD = re.compile(r"\w+")
_DEFINED = re.compile(r"^(?:class|def|async[ \t]+def)[ \t]+([A-Za-z_]\w*)", re.MULTILINE)


def defined_names(source: str) -> set[str]:
    """The names of the module's top-level classes and functions (a regular expression: fast,
    and blind to what a parse would also see, which only makes the search narrower)."""
    return set(_DEFINED.findall(source))


def search_key(source: str) -> tuple:
    """What `possible_runners` reads of the document: its top-level names and import lines."""
    return frozenset(defined_names(source)), tuple(_IMPORT_LINE.findall(source))


def possible_runners(document: str, texts: Mapping[str, str], max_files: int = MAX_FILES) -> set[str] | None:
    """`document` and the files of `texts` (path -> text) that import one of its top-level
    classes or functions, directly or through the names of files found so; None when that is
    more than `max_files` files (names this common: the whole index is needed anyway).

    A file imports a name of a found file when its text has the name and that file's module
    name (`from model import Net`, `import model` ... `model.Net`; a star import takes every
    name); what a found file imports itself it also exports (a package's `__init__.py`)."""
    exported = {document: defined_names(texts.get(document, ""))}
    frontier = [document]
    while frontier:
        added = []
        for path, text in texts.items():
            if path in exported:
                continue
            used = _names_used_from(text, frontier, exported)
            if used:
                exported[path] = defined_names(text) | used
                added.append(path)
                if len(exported) > max_files:
                    return None
        frontier = added
    return _with_imports(set(exported), document, texts, max_files)


def _with_imports(found: set[str], document: str, texts: Mapping[str, str], max_files: int) -> set[str] | None:
    """`found`, the workspace files the document imports, transitively (where its classes'
    bases are defined: which of them are nn.Modules), and those the other files found import
    themselves (`train(model)` of an `engine.py`: where an instance passed on is called)."""
    by_module = _by_module_suffix(texts)
    for runner in found - {document}:
        found = found | _imported_files(runner, texts, by_module)
    todo, walked = [document], {document}  # a file found as a runner is walked here too
    while todo:
        for path in _imported_files(todo.pop(), texts, by_module):
            found.add(path)
            if path not in walked:
                walked.add(path)
                todo.append(path)
        if len(found) > max_files:
            return None
    return found


def _by_module_suffix(texts: Mapping[str, str]) -> dict[str, list[str]]:
    """Each file under every dotted name it may be imported as (`functional`,
    `transforms.functional`, ...): which folder is on `sys.path` is not known from text."""
    found: dict[str, list[str]] = {}
    for path in texts:
        parts = path.replace("\\", "/").split("/")
        parts[-1] = parts[-1][:-3] if parts[-1].endswith(".py") else parts[-1]
        if parts[-1] == "__init__":
            parts.pop()
        for start in range(len(parts) - 1, 0, -1):
            found.setdefault(".".join(parts[start:]), []).append(path)
    return found


def _imported_files(importer: str, texts: Mapping[str, str], by_module: Mapping[str, list[str]]) -> set[str]:
    """The workspace files the importer's import statements name: modules, and submodules
    imported by name (`from pkg import model`); relative imports from its own package."""
    found: set[str] = set()
    folder = importer.replace("\\", "/").rpartition("/")[0]
    for dots, module, names in _imports(texts.get(importer, "")):
        if dots:
            base = folder.rsplit("/", dots - 1)[0] if dots > 1 else folder
            prefix = "/".join([base, *module.split(".")]) if module else base
            found.update(path for path in (prefix + ".py", prefix + "/__init__.py", *(f"{prefix}/{n}.py" for n in names))
                         if path in texts)
        else:
            for dotted in (module, *(f"{module}.{name}" for name in names)):
                found.update(by_module.get(dotted, ()))
    return found


def _imports(text: str):
    """(leading dots, module, imported names) of each import statement (its first line)."""
    for match in _FROM_IMPORT.finditer(text):
        yield len(match[1]), match[2], [item.split()[0] for item in match[3].split(",") if item.split()]
    for match in _IMPORT.finditer(text):
        for item in match[1].split(","):
            if item.split():
                yield 0, item.split()[0], []


def _names_used_from(text: str, sources: list[str], exported: Mapping[str, set[str]]) -> set[str]:
    """The names of `sources` that `text` imports: an import line of it names the module, and
    the text has the name."""
    modules = {source: _module_name(source) for source in sources}
    if not any(module in text for module in modules.values()):
        return set()  # most files: one substring search per module
    lines = "\n".join(_IMPORT_LINE.findall(text))
    imported = set(_WORD.findall(lines))
    used: set[str] = set()
    for source, module in modules.items():
        if module in imported:
            used |= {name for name in exported[source]
                     if "*" in lines or (name in text and re.search(r"\b%s\b" % name, text))}
    return used


def _module_name(path: str) -> str:
    """What an import of the file names: its stem, or its package's folder for `__init__.py`."""
    folder, _, name = path.replace("\\", "/").rpartition("/")
    stem = name[:-3] if name.endswith(".py") else name
    return folder.rpartition("/")[2] if stem == "__init__" else stem
