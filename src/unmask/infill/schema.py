"""JSON Schema forms: a schema becomes a form (skeleton locked, values as holes) and is filled
in one diffusion pass; the output always validates against the schema.

Inside:

- ``schema_form(schema, tokenizer)``: the form a schema becomes. Objects (every property,
  in the schema's order) and fixed-size arrays (``minItems == maxItems``, or
  ``prefixItems`` alone) are skeleton; every other subschema is one ``ValueHole`` whose
  language is the subschema's regex.
- ``schema_regex(schema)``: that regex: outlines-core's ``build_regex_from_schema``, with
  numeric ``minimum``/``maximum`` (which the library ignores) compiled here
  (``unmask.infill.forms.int_range`` / ``float_range``).
- ``check_schema(schema)``: ``UserError`` naming a keyword that cannot be enforced.
- ``fill_schema``: ``schema_form`` then ``unmask.infill.fill_form``.

Why a skeleton rather than one automaton for the whole document: the keys and punctuation
are known, so they are locked text the model reads from both sides, and each value gets
its own span; diffusion then fills the values in any order. Only what the schema leaves
open (optional structure, variable-length arrays, ``anyOf``) is a single hole.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any
from urllib.parse import unquote

import torch

from unmask.config import SampleConfig
from unmask.errors import CONTEXT_WORDS, UserError
from unmask.infill.automaton import (
    _FLAGS,
    _HEX_ESCAPE,
    MAX_DFA_STATES,
    NO_MATCH,
    TokenAutomaton,
    _map_classes,
    anchors,
    check_size,
    check_syntax,
    check_total,
    ecma_classes,
    quote_pattern,
    top_level_branches,
    vocab_of,
    whole_pattern,
)
from unmask.infill.fill import _max_seq_len
from unmask.infill.forms import (
    FormResult,
    ValueHole,
    check_unicode,
    decimal_digits,
    fill_form,
    float_range,
    int_range,
    load_json,
    parse_form,
    text_value,
    value_automaton,
)
from unmask.sampling.loop import MaskPredictor, StepCallback

MAX_VALUE_TOKENS = 32
"""Widest hole (tokens) a schema value gets when its language is longer or unbounded (a string
without ``maxLength``): the value is then at most this long."""
INT_DIGITS = 6
"""A number bounded on one side only gets at most this many digits on the other, and one with
no range keyword at all (``{"type": "integer"}``) lies in -999999..999999: without a bound a
left-to-right (causal) fill never has to stop, and greedy decoding wrote digits to the hole's
full width (33 of them). A schema's own ``minimum`` / ``maximum`` widen (or narrow) it."""

MAX_FORM_VALUES = 8192
"""Most values (skeleton nodes and holes) a schema's form may have: a fixed-size array of
``minItems`` 10^6 would otherwise be built value by value (a millisecond each) before the
model's context refused it. A model's own context (``schema_form(context=...)``) may lower it."""

MAX_NUMBER_DIGITS = 40
"""Most digits a numeric range's bounds may have: a range compiles to a regex of a few
branches per digit (``unmask.infill.forms.int_range``), cheap up to here; wider ranges
(``"maximum": 1e300``) are refused by name rather than compiled slowly."""

_NOTES = ("title", "description", "$schema", "$id", "default", "examples", "$comment",
          "readOnly", "writeOnly", "deprecated", "$anchor", "discriminator")
"""Annotations and identifiers: JSON Schema's meta-data vocabulary (``readOnly``, ``writeOnly``
and ``deprecated`` as pydantic and OpenAPI documents write them were refused as "cannot be
enforced", though they constrain no value), the names a schema gives itself, and OpenAPI's
``discriminator`` beside a ``oneOf``/``anyOf`` (pydantic's tagged union: the branches'
tags already decide, ``_check_discriminator``; JSON Schema validators ignore it)."""
ENFORCED = {
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "prefixItems",
    "minItems",
    "maxItems",
    "enum",
    "const",
    "minLength",
    "maxLength",
    "pattern",
    "format",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "anyOf",
    "oneOf",
    "allOf",
    "$ref",
    "$defs",
    "definitions",
    *_NOTES,
    "strict",
    "name",
    "uniqueItems",
}
"""Keywords the output honours (annotations included); any other is refused. ``uniqueItems``
only as ``false``, its default, which OpenAPI generators write out (``check_schema`` refuses
it as ``true``; as ``false`` it was refused too, though it constrains nothing)."""
FORMATS = ("date", "date-time", "time", "email", "uri", "uuid")
"""String formats enforced (``_format_regex``)."""
_MARK = "UNMASKNUM{}"
_KEY_MARK = "UNMASKKEY{}"
_PLAIN_KEY = re.compile(r'[^"\\\x00-\x1f]*')
"""A property name the library may write as it is between quotes (it does not JSON-escape)."""


_UNREAD = ("default", "examples")
"""Annotations whose values are instances nothing reads: an object in one with a key given
twice is let through (``_read_objects``), as JSON Schema validators do, and not refused."""
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
"""Keywords whose value maps names to subschemas (a property may be called ``default``)."""


def _read_objects(doc: Any) -> Iterator[Any]:
    """The objects of a parsed schema whose keys unmask reads (``load_json``'s ``read``): all
    but those inside an annotation's value (``_UNREAD``). One in a ``const`` or ``enum``
    constrains the value, and a repeated keyword or property name leaves one unenforced: a
    key given twice there is refused."""
    stack = [(doc, True)]  # (node, whether it stands where a schema does)
    while stack:
        node, schema = stack.pop()
        if isinstance(node, list):
            stack.extend((v, schema) for v in node)
        elif isinstance(node, dict):
            yield node
            for key, value in node.items():
                if not schema:
                    stack.append((value, False))
                elif key in _SCHEMA_MAPS and isinstance(value, dict):
                    yield value
                    stack.extend((v, True) for v in value.values())
                elif key not in _UNREAD:
                    stack.append((value, key not in ("const", "enum")))


def _where(path: str) -> str:
    """``schema at PATH``; a path over 100 characters by its two ends (``quote_pattern``: a
    recursive ``$ref`` was refused at a path of 33 levels, a message of over 300 characters)."""
    return f"schema at {path if len(path) <= 100 else quote_pattern(path, 100)}"


class Unsatisfiable(UserError):
    """A (sub)schema no value satisfies (an empty range, ``false``, ``allOf`` branches that
    exclude each other...): an ``anyOf`` / ``oneOf`` branch that is one is left out, as no
    value could match it (``check_schema``, ``_pruned``); the schema is refused only when
    every branch is."""


def load_schema(schema: str | Mapping[str, Any], source: str = "schema") -> dict[str, Any]:
    """A schema from JSON text or a mapping; OpenAI's ``{"name", "schema", "strict"}`` wrapper
    (``response_format.json_schema``) is unwrapped."""
    if isinstance(schema, str):
        schema = load_json(schema, source, read=_read_objects)
    check_unicode(schema, source)
    if schema is True:  # the schema that admits any value
        schema = {}
    if not isinstance(schema, Mapping):
        raise UserError(f"{source}: a JSON Schema is an object, not {type(schema).__name__}")
    out = dict(schema)
    if "schema" in out and isinstance(out["schema"], Mapping) and "type" not in out:
        out = dict(out["schema"])
    return _whole_counts(out)


_COUNTS = ("minLength", "maxLength", "minItems", "maxItems")
_TYPES = ("string", "number", "integer", "boolean", "null", "object", "array")
ANY_VALUE = {"type": ["string", "number", "boolean", "null"]}
"""What an unconstrained subschema (``true``, ``{}``) is filled with: any scalar, a subset of
what it admits. outlines-core's own regex for ``{}`` inside an object is a bare alternation
that matches outside the object too."""


def _whole_counts(doc: Any) -> Any:
    """``doc`` with integer-valued float counts (``"minLength": 1e3``, JSON's spelling of an
    integer too) made ints, so that they are enforced and not silently dropped."""
    if isinstance(doc, list):
        return [_whole_counts(v) for v in doc]
    if not isinstance(doc, Mapping):
        return doc
    return {
        k: int(v) if (k in _COUNTS and isinstance(v, float) and v.is_integer()) else
        _whole_counts(v)
        for k, v in doc.items()
    }


def _resolve(node: Any, root: Mapping[str, Any], path: str, depth: int = 0) -> Any:
    """``node`` with a local ``$ref`` (``#/$defs/X``) followed."""
    while isinstance(node, Mapping) and "$ref" in node:
        ref = node["$ref"]
        if not isinstance(ref, str) or not (ref == "#" or ref.startswith("#/")):
            raise UserError(f"{_where(path)}: only local $ref (#/$defs/...) is supported")
        if depth > 16:
            raise UserError(f"{_where(path)}: recursive $ref {quote_pattern(ref)} cannot be "
                            "enforced")
        target: Any = root
        # a JSON pointer in a URI fragment (RFC 6901); "#" is the whole schema (it was
        # refused as not local), and an array's items are numbered (#/anyOf/0: "points nowhere")
        for raw in ref[2:].split("/") if ref != "#" else []:
            part = unquote(raw).replace("~1", "/").replace("~0", "~")  # ``a~1b``: ``a/b``
            if isinstance(target, Mapping) and part not in target:  # a key written with a
                part = raw.replace("~1", "/").replace("~0", "~")  # "%" in it: ``a%20b``
            if isinstance(target, list) and re.fullmatch(r"0|[1-9][0-9]*", part) and int(
                    part) < len(target):
                target = target[int(part)]
                continue
            if not isinstance(target, Mapping) or part not in target:
                raise UserError(f"{_where(path)}: $ref {quote_pattern(ref)} points "
                                "nowhere")
            target = target[part]
        rest = {k: v for k, v in node.items() if k != "$ref"}
        if target is False:
            raise Unsatisfiable(f"{_where(path)}: $ref {quote_pattern(ref)} is false, which "
                                "admits no value")
        if target is True:
            target = {}
        if not isinstance(target, Mapping):
            raise UserError(f"{_where(path)}: $ref {quote_pattern(ref)} points to no "
                            "schema")
        if set(rest) - set(_INERT) and set(target) - set(_INERT):
            # keywords beside a $ref apply too (they overrode the target's: a "minimum": -2
            # beside a $ref to "minimum": 0 let -2 through)
            target = _resolve(target, root, path, depth + 1)
            if isinstance(target, Mapping) and "anyOf" in target:
                # a union (zod's named union): the keywords beside it apply to each branch
                # (``_by_type``); one both set merges as in allOf
                node = dict(target)
                for key, value in rest.items():
                    node[key] = _merge_key(key, node[key], value, root, path, depth) if (
                        key in node) else value
            else:
                node = {"allOf": [target, rest]}
        else:
            node = {**target, **rest}
        depth += 1
    if isinstance(node, Mapping) and "allOf" in node:
        node = _merge_all(node, root, path, depth)
    if isinstance(node, Mapping) and "oneOf" in node:
        node = _one_of(node, root, path, depth)
    if isinstance(node, Mapping):
        node = _typed_values(_required_present(_live_types(node, path), path), root, path,
                             depth)
    return node


def _live_types(node: Mapping[str, Any], path: str) -> Mapping[str, Any]:
    """A node with a ``type`` list without the types its own bounds (``_own_dead``) leave no
    value of, when others are left: no value of them satisfies it, so it admits the same
    values (``{"type": ["string", "integer"], "minimum": 5, "maximum": 3}`` is a string;
    it was refused as "only a value of another type"). Unchanged otherwise: ``enum`` /
    ``const`` (``_typed_values``), a malformed ``type`` or bound (``check_schema``)."""
    types = node.get("type")
    if not isinstance(types, list) or "enum" in node or "const" in node or not all(
            isinstance(t, str) and t in _TYPES for t in types):
        return node
    try:
        dead = {k for k, e in _own_dead(node, path).items() if isinstance(e, Unsatisfiable)}
    except UserError:
        return node
    live = [t for t in types if ("number" if t == "integer" else t) not in dead]
    return {**node, "type": live} if live and len(live) < len(types) else node


def _required_present(node: Mapping[str, Any], path: str) -> Mapping[str, Any]:
    """An object schema whose ``required`` names all have a ``properties`` entry: a name it
    lacks gets ``additionalProperties``' schema (any value without one), so the output holds
    it; ``UserError`` when ``additionalProperties`` is false."""
    required, props = node.get("required"), node.get("properties")
    if not isinstance(required, list) or (props is not None and not isinstance(props, Mapping)):
        return node
    missing = [n for n in required if isinstance(n, str) and n not in (props or {})]
    if not missing:
        return node
    extra = node.get("additionalProperties", True)
    if extra is False:
        _rule_out(node, "object", f"{_where(path)}: required property {missing[0]!r} is not in "
                  "properties and additionalProperties is false: no object satisfies it")
        return node  # it admits no object: what it says of properties is moot
    more = {n: (extra if isinstance(extra, Mapping) else {}) for n in missing}
    return {**node, "properties": {**(props or {}), **more}}


def _typed_values(node: Mapping[str, Any], root: Mapping[str, Any], path: str,
                  depth: int = 0) -> Mapping[str, Any]:
    """A schema with ``enum`` / ``const``: the values every other keyword admits (the type,
    the other of ``enum``/``const``, ranges, lengths, ``pattern``, ``format``, items,
    properties...), as ``{"enum": [...]}`` (annotations kept); the output is one of them, so
    it satisfies the whole schema. ``UserError`` when none is left. Unchanged without
    ``enum``/``const`` or when a value list is malformed (``check_schema`` names it)."""
    if not ("enum" in node or "const" in node):
        return node
    values = node["enum"] if "enum" in node else [node["const"]]
    if not isinstance(values, list) or not values:
        return node  # check_schema names it
    types = _types(node)
    if types and all(isinstance(t, str) and t in _TYPES for t in types):
        kinds = _kinds({"type": node["type"]}) or set()
        typed = [v for v in values if _kinds({"const": v}) and _kinds({"const": v}) <= kinds]
        if not typed:
            key = "enum" if "enum" in node else "const"
            raise Unsatisfiable(f"{_where(path)}: no {key} value is of type {node['type']!r}")
    rest = {k: v for k, v in node.items() if k not in ("enum", "const", *_NOTES)}
    if "enum" in node and "const" in node:
        rest["const"] = node["const"]
    others = ", ".join(sorted(k for k in rest if k not in _INERT)) or "none"  # as written
    if not types or all(isinstance(t, str) and t in _TYPES for t in types):
        # the other keywords as they act on the values' own types: a maxLength under
        # minLength beside "const": 5 says nothing of 5
        own = {_json_kind(v) for v in values}
        rest["type"] = sorted(k for k in own if not types or k in types
                              or (k == "integer" and "number" in types)) or types
    check_schema(rest, root, path, depth + 1)  # what the values are checked against
    keep = [v for v in values if _admits(v, rest, root, path, depth + 1)]
    if not keep:
        raise Unsatisfiable(f"{_where(path)}: no enum/const value satisfies the schema's other "
                        f"keywords ({others})")
    return {**{k: v for k, v in node.items() if k in _NOTES}, "enum": keep}


def _json_kind(v: Any) -> str:
    """A value's JSON type (``integer`` for a whole number, ``1.0`` included)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer()):
        return "integer"
    if isinstance(v, float):
        return "number"
    return {dict: "object", list: "array", str: "string"}.get(type(v), "?")


@functools.lru_cache(maxsize=64)
def _byte_automaton(regex: str) -> TokenAutomaton:
    """``regex`` over the 256 single bytes, compiled once per process (an enum of 1000
    values checked against one ``format`` compiled it 1000 times: 45 s)."""
    from unmask.infill.automaton import _BYTES

    return TokenAutomaton.from_regex(regex, _BYTES, what="regex")


def _text_matches(text: str, regex: str, what: str) -> bool:
    """Whether ``text`` matches ``regex`` (outlines-core's syntax) in full; ``UserError``
    naming ``what`` (a schema's place and keyword) for a regex the engine refuses or one
    that matches nothing."""
    try:
        auto = _byte_automaton(regex)
    except UserError as e:
        why = str(e).removeprefix("regex: ")
        if why.startswith("no sequence of this tokenizer's tokens"):
            raise UserError(f"{what} matches no string") from None
        raise UserError(f"{what}: {why}") from None
    return auto.accepts(list(text.encode("utf-8")))


def _admits(value: Any, schema: Any, root: Mapping[str, Any], path: str, depth: int) -> bool:
    """Whether ``value`` satisfies ``schema`` (a ``check_schema``-ed one): each enforced
    keyword as JSON Schema reads it, except that a ``pattern`` must match the whole string
    (``_anchored``: as it is enforced here) and ``format`` is our format's language."""
    if isinstance(schema, bool):
        return schema
    if depth > 32:
        raise UserError(f"{_where(path)}: nested too deep (recursive $ref?)")
    node = _resolve(schema, root, path, depth)
    kind = _json_kind(value)
    types = _types(node)
    if types and not (kind in types or (kind == "integer" and "number" in types)):
        return False
    if "enum" in node and not any(_same_value(value, w) for w in node["enum"]):
        return False
    if "const" in node and not _same_value(value, node["const"]):
        return False
    if "anyOf" in node and not any(
        _admits(value, sub, root, f"{path}.anyOf[{i}]", depth + 1)
        for i, sub in enumerate(node["anyOf"])
    ):
        return False
    if kind in ("integer", "number"):
        v = _decimal(value)
        for key, ok in (("minimum", v.__ge__), ("maximum", v.__le__),
                        ("exclusiveMinimum", v.__gt__), ("exclusiveMaximum", v.__lt__)):
            if key in node and not ok(_decimal(node[key])):
                return False
    if kind == "string":
        if not node.get("minLength", 0) <= len(value) <= node.get("maxLength", len(value)):
            return False
        text = json.dumps(value, ensure_ascii=False)
        pattern = node.get("pattern")
        if pattern is not None and not _text_matches(
            text, schema_regex({"type": "string", "pattern": pattern}, path=path, plain=False),
            f"{_where(path)}: pattern {pattern!r}",
        ):
            return False
        fmt = node.get("format")
        if fmt in FORMATS and not _text_matches(text, _format_regex(fmt),
                                                f"{_where(path)}: format {fmt!r}"):
            return False
    if kind == "array":
        if not node.get("minItems", 0) <= len(value) <= node.get("maxItems", len(value)):
            return False
        prefix = node.get("prefixItems") or []
        items = node.get("items", True)
        for i, item in enumerate(value):
            sub = prefix[i] if i < len(prefix) else items
            if not _admits(item, sub, root, f"{path}[{i}]", depth + 1):
                return False
    if kind == "object":
        props = node.get("properties") or {}
        if any(name not in value for name in node.get("required") or []):
            return False
        extra = node.get("additionalProperties", True)
        for name, item in value.items():
            sub = props.get(name, extra)
            if not _admits(item, sub, root, f"{path}.{name}", depth + 1):
                return False
    return True


# -- allOf / oneOf ---------------------------------------------------------------------------

_LOWER = ("minimum", "exclusiveMinimum", "minLength", "minItems")
_UPPER = ("maximum", "exclusiveMaximum", "maxLength", "maxItems")
_INERT = (*_NOTES, "$defs", "definitions")
"""Keywords that constrain no value: annotations, and definitions (read through ``root``
when a ``$ref`` names them)."""


def _type_set(node: Mapping[str, Any]) -> set[str] | None:
    """The JSON types a node's ``type`` admits (``number`` includes ``integer``); None: any."""
    types = _types(node)
    if not types:
        return None
    out = set(types)
    return out | {"integer"} if "number" in out else out


def _merge_all(node: Mapping[str, Any], root: Mapping[str, Any], path: str, depth: int) -> Any:
    """``allOf`` merged into one schema, where the branches' constraints combine simply: types
    intersected, ``properties`` united (a property in several branches merged the same way),
    ``required`` united, ``enum``/``const`` intersected, lower bounds raised and upper bounds
    lowered; anything else two branches both set must be equal. ``UserError`` naming the
    keyword otherwise (``anyOf``/``oneOf`` inside a branch, two different patterns...)."""
    where = f"{path}.allOf"
    branches = node["allOf"]
    if not isinstance(branches, list) or not branches:
        raise UserError(f"{_where(path)}: allOf must be a non-empty list of schemas")
    out: dict[str, Any] = {k: v for k, v in node.items() if k != "allOf"}
    _check_structure(out, path)
    for i, sub in enumerate(branches):
        if sub is True:
            continue
        if sub is False:
            raise Unsatisfiable(f"{_where(f'{where}[{i}]')}: false admits no value")
        if not isinstance(sub, Mapping):
            raise UserError(f"{_where(f'{where}[{i}]')}: a schema is an object, not "
                            f"{type(sub).__name__}")
        sub = _resolve(sub, root, f"{where}[{i}]", depth + 1)
        if isinstance(sub, Mapping):
            _check_structure(sub, f"{where}[{i}]")  # before its parts are merged
            out, sub = _reach(out, sub), _reach(sub, out)
        for key, value in sub.items():
            if key in ("anyOf", "oneOf"):
                raise UserError(f"{_where(f'{where}[{i}]')}: {key} inside allOf cannot be "
                                "enforced (only simple constraints merge)")
            out[key] = _merge_key(key, out[key], value, root, f"{where}[{i}]", depth) if (
                key in out) else copy.deepcopy(value)
    return _forbidden_dropped(out, path)


def _reach(node: dict[str, Any], other: Mapping[str, Any]) -> dict[str, Any]:
    """``node`` with what ``other`` (another ``allOf`` branch) says of its parts beyond its
    own: a property ``other`` does not list gets ``other``'s ``additionalProperties``, and
    each ``prefixItems`` entry ``other``'s ``items`` when ``other`` has no prefix (merged
    as they were, ``{"properties": {"a": ...}, "additionalProperties": false}`` beside
    ``{"properties": {"b": ...}}`` wrote ``b``, which the first forbids)."""
    out = dict(node)
    extra = other.get("additionalProperties", True)
    props = out.get("properties")
    if not _admits_any(extra) and isinstance(props, Mapping):
        theirs = other.get("properties") or {}
        out["properties"] = {n: s if n in theirs else _both(s, extra) for n, s in props.items()}
    items = other.get("items", True)
    prefix = out.get("prefixItems")
    if not _admits_any(items) and isinstance(prefix, list) and "prefixItems" not in other:
        out["prefixItems"] = [_both(s, items) for s in prefix]
    return out


def _both(a: Any, b: Any) -> Any:
    """The subschema admitting what both ``a`` and ``b`` admit."""
    if _admits_any(a) or b is False:
        return b
    if _admits_any(b) or a is False:
        return a
    return {"allOf": [a, b]}


def _forbidden_dropped(node: dict[str, Any], path: str) -> dict[str, Any]:
    """A merged ``allOf`` without the parts a branch forbids (``_reach``): a property whose
    schema became ``false`` is left out (``UserError`` when required), and an array ends
    before the first ``prefixItems`` entry that did."""
    props = node.get("properties")
    if isinstance(props, Mapping) and any(s is False for s in props.values()):
        for name, sub in props.items():
            if sub is False and name in (node.get("required") or []):
                _rule_out(node, "object", f"{_where(path)}: allOf: required property {name!r} "
                          "is forbidden by another branch's additionalProperties")
        node["properties"] = {n: s for n, s in props.items() if s is not False}
    prefix = node.get("prefixItems")
    if isinstance(prefix, list) and False in prefix:
        k = next(i for i, s in enumerate(prefix) if s is False)
        if node.get("minItems", 0) > k:
            _rule_out(node, "array", f"{_where(path)}: allOf: minItems {node['minItems']} but "
                      f"another branch's items forbid item {k}: no array satisfies it")
        node["maxItems"] = min(node.get("maxItems", k), k)
        if k:
            node["prefixItems"] = prefix[:k]
        else:
            del node["prefixItems"]
    return node


def _merge_key(key: str, a: Any, b: Any, root: Mapping[str, Any], path: str, depth: int) -> Any:
    """One keyword set by two ``allOf`` branches, combined (``_merge_all``)."""
    if key == "uniqueItems":  # before ==: 0 == False
        return b if a is False else a  # true (or malformed) in either: refused (check_schema)
    if key in _INERT or a == b:
        return a
    if key == "type":
        both = (_type_set({"type": a}) or set()) & (_type_set({"type": b}) or set())
        if not both:
            raise Unsatisfiable(f"{_where(path)}: allOf: no type satisfies every branch")
        return sorted(both - {"integer"} if "number" in both else both)
    if key == "required":
        return list(dict.fromkeys([*a, *b]))
    if key == "properties":
        merged = dict(a)
        for name, sub in b.items():
            merged[name] = _both(merged[name], sub) if name in merged else sub
        return merged
    if key in ("enum", "const"):
        values = a if key == "enum" else [a]
        other = b if key == "enum" else [b]
        keep = [v for v in values if any(_same_value(v, w) for w in other)]
        if not keep:
            raise Unsatisfiable(f"{_where(path)}: allOf: no value satisfies every {key}")
        return keep if key == "enum" else keep[0]
    if key in _LOWER + _UPPER and isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return max(a, b) if key in _LOWER else min(a, b)
    if key in ("items", "additionalProperties") and all(
        isinstance(x, (bool, Mapping)) for x in (a, b)
    ):
        return _both(a, b)  # true (or {}) adds nothing; false admits nothing
    raise UserError(f"{_where(path)}: allOf: two different {key!r} values cannot be merged")


def _admits_any(schema: Any) -> bool:
    """Whether a subschema admits every value (``true``, ``{}``, annotations only)."""
    return schema is True or (isinstance(schema, Mapping) and not set(schema) - set(_NOTES))


def _value_key(v: Any) -> tuple[str, Any]:
    """A JSON value as JSON Schema compares them: 1 == 1.0, True is not 1."""
    if isinstance(v, bool) or v is None:
        return ("literal", v)
    if isinstance(v, (int, float)):
        return ("number", float(v))
    return ("json", json.dumps(v, sort_keys=True))


def _same_value(a: Any, b: Any) -> bool:
    return _value_key(a) == _value_key(b)


def _kinds(node: Any) -> set[str] | None:
    """The JSON kinds a (resolved) schema admits: null, boolean, object, array, string,
    integer, fraction (a number that is not an integer); None when it cannot be told."""
    if not isinstance(node, Mapping):
        return None

    def kind(v: Any) -> str:
        if v is None:
            return "null"
        if isinstance(v, bool):
            return "boolean"
        if isinstance(v, (int, float)):
            return "integer" if float(v).is_integer() else "fraction"
        return {dict: "object", list: "array", str: "string"}.get(type(v), "?")

    if "const" in node:
        return {kind(node["const"])}
    if isinstance(node.get("enum"), list):
        return {kind(v) for v in node["enum"]}
    types = _type_set(node)
    if types is None or "anyOf" in node:
        return None
    return (types - {"number"}) | ({"fraction"} if "number" in types else set())


def _interval(node: Mapping[str, Any]) -> tuple[float, bool, float, bool]:
    """(low, low open, high, high open) of a numeric schema's range."""
    lo, lo_open, hi, hi_open = -math.inf, False, math.inf, False
    if "minimum" in node:
        lo = float(node["minimum"])
    if "exclusiveMinimum" in node and float(node["exclusiveMinimum"]) >= lo:
        lo, lo_open = float(node["exclusiveMinimum"]), True
    if "maximum" in node:
        hi = float(node["maximum"])
    if "exclusiveMaximum" in node and float(node["exclusiveMaximum"]) <= hi:
        hi, hi_open = float(node["exclusiveMaximum"]), True
    return lo, lo_open, hi, hi_open


_KINDS = ("null", "boolean", "object", "array", "string", "number")
"""The JSON types as JSON Schema's keywords tell them apart: ``minimum`` / ``maximum`` act on
integers and numbers alike, so ``integer`` counts as ``number`` here."""


def _allowed(node: Mapping[str, Any]) -> set[str]:
    """The JSON types (``_KINDS``) a resolved node's own ``type``, ``enum`` and ``const``
    admit: the only values its type-specific keywords (lengths, ranges, items, required...)
    act on; every other value passes them."""
    t = node.get("type")
    types = [t] if isinstance(t, str) else t if isinstance(t, list) else []
    if types and all(isinstance(t, str) and t in _TYPES for t in types):
        out = {"number" if t == "integer" else t for t in types}
    else:  # none, or malformed (check_schema names it)
        out = set(_KINDS)
    values = node.get("enum", [node["const"]] if "const" in node else None)
    if isinstance(values, list):
        out &= {"number" if k == "integer" else k for k in map(_json_kind, values)}
    return out


def _rule_out(node: Mapping[str, Any], kind: str, why: str) -> None:
    """For a keyword of type ``kind`` (``_KINDS``) that no value of that type satisfies:
    ``Unsatisfiable`` when ``node`` admits no other type (then no value satisfies it); a
    plain refusal when it admits others (a value of one of them satisfies it, but a fill is
    not held to "any type but ``kind``"); nothing when it admits no ``kind`` at all (the
    keyword says nothing of its values: ``"type": "string"`` beside an empty range)."""
    _settle(node, {kind: Unsatisfiable(why)})


def _settle(node: Mapping[str, Any], dead: Mapping[str, UserError]) -> None:
    """``_rule_out`` for several types at once (``dead``: a type -> why no value of it
    satisfies ``node``): ``Unsatisfiable`` only when every type ``node`` admits is dead."""
    allowed = _allowed(node)
    hit = sorted(k for k in _KINDS if k in allowed and k in dead)
    if not hit:
        return
    refused = [dead[k] for k in hit if not isinstance(dead[k], Unsatisfiable)]
    if refused:  # some value of the type is left, which the fill is not held to
        raise UserError(str(refused[0]))
    if len(hit) == len(allowed):
        raise Unsatisfiable("; ".join(dict.fromkeys(str(dead[k]) for k in hit)))
    others = ", ".join(k for k in _KINDS if k in allowed and k not in dead)
    # a node with a type was told to "give it a type"
    fix = f"narrow its type to {others}" if "type" in node else "give it a type"
    raise UserError(f"{dead[hit[0]]}; only a value of another type ({others}) satisfies it, "
                    f"which cannot be enforced: {fix}")


def _own_dead(node: Mapping[str, Any], path: str) -> dict[str, UserError]:
    """The types (``_KINDS``) whose values a resolved node's own bounds rule out, each with
    why: ``maxLength`` under ``minLength`` (strings), ``maxItems`` under ``minItems``
    (arrays), an empty numeric range (numbers). Its subschemas are not read."""
    dead: dict[str, UserError] = {}
    for kind, low, high in (("string", "minLength", "maxLength"),
                            ("array", "minItems", "maxItems")):
        lo, hi = node.get(low, 0), node.get(high)
        if isinstance(lo, int) and isinstance(hi, int) and hi < lo:
            dead[kind] = Unsatisfiable(f"{_where(path)}: {high} {hi} < {low} {lo}")
    try:
        _number_bounds(node, path)
    except Unsatisfiable as e:
        dead["number"] = e
    return dead


def _empty(node: Any) -> bool:
    """Whether a resolved subschema's own bounds (``_own_dead``) rule out every type it
    admits, as ``check_schema`` finds them (its subschemas are not read)."""
    if not isinstance(node, Mapping):
        return node is False
    try:
        _settle(node, _own_dead(node, "$"))
    except Unsatisfiable:
        return True
    except UserError:
        pass  # check_schema names it
    return False


def _disjoint(a: Any, b: Any, root: Mapping[str, Any], path: str, depth: int = 0) -> bool:
    """Whether no JSON value can satisfy both schemas, by a proof that is sound but not
    complete: different kinds (``type``, or the kinds of ``enum``/``const`` values),
    ``enum``/``const`` without a common value, numeric ranges that do not overlap, or
    objects with a common required property whose schemas are disjoint (a tagged union), or
    one that no value satisfies (``Unsatisfiable``: left out of the union)."""
    if a is False or b is False:
        return True
    try:
        a, b = _resolve(a, root, path, depth + 1), _resolve(b, root, path, depth + 1)
    except Unsatisfiable:
        return True
    if _empty(a) or _empty(b):
        return True
    ka, kb = _kinds(a), _kinds(b)
    if ka is not None and kb is not None and not ka & kb:
        return True
    va = a.get("enum", [a["const"]] if "const" in a else None) if isinstance(a, Mapping) else None
    vb = b.get("enum", [b["const"]] if "const" in b else None) if isinstance(b, Mapping) else None
    if isinstance(va, list) and isinstance(vb, list):
        return not any(_same_value(x, y) for x in va for y in vb)
    if ka and kb and ka | kb <= {"integer", "fraction"} and va is None and vb is None:
        lo1, o1, hi1, p1 = _interval(a)
        lo2, o2, hi2, p2 = _interval(b)
        if hi1 < lo2 or (hi1 == lo2 and (p1 or o2)) or hi2 < lo1 or (hi2 == lo1 and (p2 or o1)):
            return True
    if ka == {"object"} and kb == {"object"}:
        pa, pb = a.get("properties") or {}, b.get("properties") or {}
        both = set(a.get("required") or []) & set(b.get("required") or []) & set(pa) & set(pb)
        return any(_disjoint(pa[n], pb[n], root, f"{path}.{n}", depth + 1)
                   for n in sorted(both))
    return False


def _one_of(node: Mapping[str, Any], root: Mapping[str, Any], path: str, depth: int = 0
            ) -> dict[str, Any]:
    """``oneOf`` as ``anyOf`` where the branches are provably pairwise disjoint (then at most
    one matches, and any output matching one matches exactly one); ``UserError`` naming the
    first pair that cannot be told apart otherwise."""
    branches = node["oneOf"]
    if not isinstance(branches, list) or not branches:
        raise UserError(f"{_where(path)}: oneOf must be a non-empty list of schemas")
    if "anyOf" in node:
        raise UserError(f"{_where(path)}: oneOf together with anyOf cannot be enforced")
    for i in range(len(branches)):
        for j in range(i + 1, len(branches)):
            if not _disjoint(branches[i], branches[j], root, f"{path}.oneOf", depth):
                raise UserError(
                    f"{_where(path)}: oneOf branches {i} and {j} cannot be proven disjoint "
                    "(a value might match both); use anyOf, or tell them apart by type, "
                    "enum/const, numeric range or a required const property"
                )
    out = {k: v for k, v in node.items() if k != "oneOf"}
    out["anyOf"] = list(branches)
    return out


def _finite(value: Any) -> bool:
    """Whether every number in ``value`` (a JSON value) is finite."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, Mapping):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


def _check_keywords(node: Mapping[str, Any], path: str) -> None:
    """``check_schema``'s refusal of a keyword the output cannot be held to, or of an ``enum`` /
    ``const`` holding a non-finite number."""
    for key in node:
        if key not in ENFORCED:
            raise UserError(f"{_where(path)}: keyword {key!r} cannot be enforced")
        if key in ("enum", "const") and not _finite(node[key]):  # the library's traceback
            raise UserError(f"{_where(path)}: {key} holds a non-finite number (NaN, or one too "
                            "large for a float: 1e400 is read as infinity), which no JSON output "
                            "can write")


def check_schema(
    schema: Mapping[str, Any],
    root: Mapping[str, Any] | None = None,
    path: str = "$",
    depth: int = 0,
) -> None:
    """``UserError`` naming the first keyword (and where) the output could not be held to:
    unknown or unenforceable keywords (``multipleOf``, ``not``, ``patternProperties``,
    ``uniqueItems``...), unsupported formats, bad bounds, ``oneOf`` branches that cannot be
    proven disjoint, ``allOf`` branches that do not merge simply."""
    root = schema if root is None else root
    if depth > 32:
        raise UserError(f"{_where(path)}: nested too deep (recursive $ref?)")
    if isinstance(schema, bool):
        if not schema:
            raise Unsatisfiable(f"{_where(path)}: false admits no value")
        return
    if not isinstance(schema, Mapping):
        raise UserError(f"{_where(path)}: a schema is an object, not {type(schema).__name__}")
    _check_keywords(schema, path)
    node = _resolve(schema, root, path)
    if node is not schema:  # what a $ref or allOf branches brought in
        _check_keywords(node, path)
    for key in _COUNTS:
        v = node.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise UserError(f"{_where(path)}: {key} must be a non-negative integer, not {v!r}")
        if key.startswith("min") and v is not None and v >= 1 << 64:  # the regex writer's u64
            # dropped it: an array of minItems 2**64 was answered []
            raise UserError(f"{_where(path)}: {key} {v} is too large to enforce")
    for key in ("enum", "anyOf", "oneOf", "allOf", "prefixItems"):
        if key in node and (not isinstance(node[key], list) or not node[key]):
            raise UserError(f"{_where(path)}: {key} must be a non-empty list")
    _check_structure(node, path)
    if "discriminator" in node:
        _check_discriminator(node, root, path, "oneOf" if "oneOf" in schema else "anyOf")
    if "type" in node:
        types = node["type"] if isinstance(node["type"], list) else [node["type"]]
        bad = [t for t in types if t not in _TYPES]
        if not types or bad:
            raise UserError(f"{_where(path)}: type must be one of {', '.join(_TYPES)} (or a "
                            f"non-empty list of them), not {node['type']!r}")
    fmt = node.get("format")
    if fmt is not None and fmt not in FORMATS:
        raise UserError(
            f"{_where(path)}: format {fmt!r} cannot be enforced (supported: {', '.join(FORMATS)})"
        )
    if fmt is not None and "pattern" in node and (not _types(node) or "string" in _types(node)):
        # the format's regex replaced the pattern (an email that did not match it)
        raise UserError(f"{_where(path)}: pattern together with format cannot be enforced; "
                        "keep one (a pattern can spell the format)")
    unique = node.get("uniqueItems", False)
    if not isinstance(unique, bool):  # 0 was taken as false, "yes" said "cannot be enforced"
        raise UserError(f"{_where(path)}: uniqueItems is true or false, not {unique!r}")
    if unique:
        raise UserError(f"{_where(path)}: keyword 'uniqueItems' cannot be enforced")
    # a keyword no value of its type satisfies rules that type out, not every value: a
    # string passes an empty numeric range (``_settle``)
    dead = _own_dead(node, path)
    required = node.get("required") if isinstance(node.get("required"), list) else []
    for name, sub in (node.get("properties") or {}).items():
        try:
            check_schema(sub, root, f"{path}.{name}", depth + 1)
        except Unsatisfiable as e:
            if name in required:
                dead.setdefault("object", e)
            # ``{"b": false}``, the common way to forbid a property: left out (``_pruned``)
    if isinstance(node.get("items"), Mapping) or node.get("items") is True:
        try:  # false: no more items
            check_schema(node["items"], root, f"{path}[]", depth + 1)
        except Unsatisfiable as e:  # only [] (or the prefix) is left: items false (_pruned)
            if node.get("minItems", 0) > len(node.get("prefixItems") or []):
                dead.setdefault("array", e)
    for i, sub in enumerate(node.get("prefixItems") or []):
        try:
            check_schema(sub, root, f"{path}[{i}]", depth + 1)
        except Unsatisfiable as e:
            if i < node.get("minItems", 0):
                dead.setdefault("array", e)
            break  # the array ends before it (``_pruned``)
    _settle(node, dead)
    branches = node.get("anyOf") or []
    unsatisfiable = []
    for i, sub in enumerate(branches):
        try:
            check_schema(sub, root, f"{path}.anyOf[{i}]", depth + 1)
        except Unsatisfiable as e:  # no value matches it: left out (``_pruned``)
            unsatisfiable.append(str(e))
    if branches and len(unsatisfiable) == len(branches):
        raise Unsatisfiable(f"{_where(path)}: no anyOf/oneOf branch can be satisfied ("
                            + "; ".join(unsatisfiable) + ")")
    add = node.get("additionalProperties")
    if isinstance(add, Mapping):
        try:
            check_schema(add, root, f"{path}.additionalProperties", depth + 1)
        except Unsatisfiable:  # no other property, as false says (``_pruned``)
            pass


def _pruned(doc: Any, root: Mapping[str, Any], path: str = "$") -> Any:
    """``doc`` (a schema document, ``root`` its whole) without the ``anyOf`` / ``oneOf``
    branches no value satisfies (``Unsatisfiable``), anywhere in it: JSON Schema reads a
    union as any of its branches, so the others are filled (one such branch refused the
    whole schema), and so are an optional property and an optional ``prefixItems`` entry
    (the array ends before it) that admit nothing. A union whose every branch is one is
    left for ``check_schema`` to refuse, naming them; another error is left for it too."""
    if isinstance(doc, list):
        return [_pruned(v, root, f"{path}[{i}]") for i, v in enumerate(doc)]
    if not isinstance(doc, Mapping):
        return doc
    out = {k: v if k in ("enum", "const", *_NOTES) else _pruned(v, root, f"{path}.{k}")
           for k, v in doc.items()}
    for key in ("anyOf", "oneOf"):
        branches = out.get(key)
        if isinstance(branches, list):
            keep = [sub for i, sub in enumerate(branches)
                    if _satisfiable(sub, root, f"{path}.{key}[{i}]")]
            out[key] = keep or branches
    props, required = out.get("properties"), out.get("required")
    if isinstance(props, Mapping):  # an optional property that admits nothing: left out
        needed = set(n for n in required if isinstance(n, str)) if isinstance(
            required, list) else set()
        kept = {n: sub for n, sub in props.items()
                if n in needed or _satisfiable(sub, root, f"{path}.{n}")}
        if len(kept) < len(props):
            out["properties"] = kept
            if not kept:  # none to lay out: the object holds no other either
                out["additionalProperties"] = False
    prefix, least, most = out.get("prefixItems"), out.get("minItems", 0), out.get("maxItems")
    if isinstance(prefix, list) and isinstance(least, int) and isinstance(most, int | None):
        # an optional item that admits nothing: the array ends before it
        k = next((i for i, sub in enumerate(prefix) if i >= least and not _satisfiable(
            sub, root, f"{path}[{i}]")), None)
        if k is not None:
            out["maxItems"] = k if most is None else min(most, k)
            if k:
                out["prefixItems"] = prefix[:k]
            else:
                del out["prefixItems"]
    # a subschema for the other properties (the items past the prefix) that admits nothing:
    # as false, none (it was refused); items that minItems asks for are left to check_schema
    extra, items = out.get("additionalProperties"), out.get("items")
    if isinstance(extra, Mapping) and not _satisfiable(extra, root, f"{path}.additionalProperties"):
        out["additionalProperties"] = False
    least, prefix = out.get("minItems", 0), out.get("prefixItems") or []
    if isinstance(items, Mapping) and isinstance(least, int) and isinstance(prefix, list) and (
            least <= len(prefix)) and not _satisfiable(items, root, f"{path}[]"):
        out["items"] = False
    return out


def _satisfiable(schema: Any, root: Mapping[str, Any], path: str) -> bool:
    """Whether ``check_schema`` finds no ``Unsatisfiable`` in ``schema`` (another error it
    finds is left for it to give)."""
    try:
        check_schema(schema, root, path)
    except Unsatisfiable:
        return False
    except UserError:
        pass
    return True


def _check_structure(node: Mapping[str, Any], path: str) -> None:
    """``UserError`` for a malformed structural keyword: ``properties`` / ``$defs`` not an
    object, ``required`` not a list of names, ``items`` / ``additionalProperties`` not a
    schema (``items`` as a list, draft 4's tuples, is named: ``prefixItems`` says it)."""
    for key in ("properties", "$defs", "definitions"):
        if key in node and not isinstance(node[key], Mapping):
            raise UserError(f"{_where(path)}: {key} must be an object of schemas, not "
                            f"{type(node[key]).__name__}")
    required = node.get("required")
    if required is not None and (
        not isinstance(required, list) or not all(isinstance(n, str) for n in required)
    ):
        raise UserError(f"{_where(path)}: required must be a list of property names, not "
                        f"{required!r}")
    items = node.get("items")
    if isinstance(items, list):
        raise UserError(f"{_where(path)}: items as a list (draft 4 tuples) cannot be enforced; "
                        "write prefixItems (and items: false for no more)")
    told = node.get("discriminator")
    if told is not None and not (isinstance(told, Mapping) and isinstance(
            told.get("propertyName"), str) and ("oneOf" in node or "anyOf" in node)):
        raise UserError(f"{_where(path)}: discriminator is read beside oneOf or anyOf, as "
                        '{"propertyName": NAME} naming the property that tells the branches '
                        "apart")
    if "pattern" in node and not isinstance(node["pattern"], str):
        raise UserError(f"{_where(path)}: pattern must be a string (a regex), not "
                        f"{type(node['pattern']).__name__}")
    if isinstance(node.get("pattern"), str):  # alone, as written: an error quotes it and its
        # column points into it, not into the value's JSON regex it is later written inside
        check_syntax(node["pattern"], f"{_where(path)}: pattern {quote_pattern(node['pattern'])}")
    for key in ("items", "additionalProperties"):
        if key in node and not isinstance(node[key], (Mapping, bool)):
            raise UserError(f"{_where(path)}: {key} must be a schema (an object or a "
                            f"boolean), not {type(node[key]).__name__}")


def _check_discriminator(node: Mapping[str, Any], root: Mapping[str, Any], path: str,
                         written: str) -> None:
    """``UserError`` unless ``node``'s ``discriminator`` adds nothing to its ``oneOf``/``anyOf``
    (it is read as an annotation): each branch (its ``$ref`` followed) an object that
    requires the property with a ``const`` or ``enum`` of tags of its own (no tag in two
    branches), and a ``mapping`` that sends each tag it names to that tag's branch (a key is
    the tag, or a non-string tag as JSON writes it: ``"1"`` for 1). Otherwise OpenAPI would
    route a fill by a property the branches do not decide (a branch without the tag, a
    mapping that sends ``"dog"`` to ``Cat``), which the fill cannot honour. ``written``: the
    union's keyword as the schema wrote it (a disjoint ``oneOf`` is an ``anyOf`` by now)."""
    told = node["discriminator"]
    name = told["propertyName"]
    key = "oneOf" if "oneOf" in node else "anyOf"

    def refuse(why: str) -> UserError:
        return UserError(f"{_where(path)}: discriminator {name!r} cannot be enforced: {why}; "
                         f"each {written} branch must be an object that requires {name!r} with a "
                         "const tag of its own")

    tags: dict[str, str | None] = {}  # tag (as JSON) -> the branch's $ref
    owner: dict[str, int] = {}  # tag (as JSON) -> the branch's index
    for i, raw in enumerate(node[key]):
        branch = _resolve(raw, root, f"{path}.{key}[{i}]")
        props = branch.get("properties") if isinstance(branch, Mapping) else None
        if (not isinstance(props, Mapping) or _types(branch) != ["object"]
                or name not in (branch.get("required") or ())):
            raise refuse(f"{written}[{i}] is no object that requires it")
        prop = _resolve(props.get(name), root, f"{path}.{key}[{i}].properties.{name}")
        if isinstance(prop, Mapping) and "const" in prop:
            values = [prop["const"]]
        elif isinstance(prop, Mapping) and isinstance(prop.get("enum"), list) and prop["enum"]:
            values = prop["enum"]  # pydantic's Literal["reptile", "lizard"]
        else:
            raise refuse(f"{written}[{i}] gives it no const tag")
        ref = raw.get("$ref") if isinstance(raw, Mapping) else None
        for tag in values:
            text = json.dumps(tag, sort_keys=True)
            if owner.setdefault(text, i) != i:
                raise refuse(f"{written}[{i}] has the tag {text} of another branch")
            tags[text] = ref if isinstance(ref, str) else None
    mapping = told.get("mapping", {})
    if not isinstance(mapping, Mapping):
        raise refuse("its mapping is no object")
    for tag, target in mapping.items():
        # a mapping's keys are strings: a tag 1 is named "1" (as pydantic writes Literal[1])
        refs = [tags[t] for t in {json.dumps(tag), str(tag)} if t in tags
                and (t == json.dumps(tag) or not t.startswith('"'))]
        if not refs or any(ref is None or target not in (ref, ref.rsplit("/", 1)[-1])
                           for ref in refs):
            raise refuse(f"its mapping sends {tag!r} to {target!r}, not the branch tagged so")


NumberRange = tuple[Decimal, bool, Decimal, bool]
"""(low, low excluded, high, high excluded) of a numeric schema, exactly as written."""


def _decimal(value: int | float) -> Decimal:
    """A bound as the decimal JSON spells it (``0.1`` is 0.1, not the nearest binary)."""
    return Decimal(value) if isinstance(value, int) else Decimal(repr(float(value)))


def _number_bounds(node: Mapping[str, Any], path: str) -> NumberRange | None:
    """The range of an ``integer`` / ``number`` schema (None: not a plain number schema):
    the strictest of its range keywords, exactly (``exclusiveMinimum: 0`` stays open at 0).
    A side left open lies ``INT_DIGITS`` digits from the other; with no range keyword
    either way of 0. An ``integer``'s bounds are the integers within."""
    keys = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
    span = 10**INT_DIGITS - 1
    if not any(k in node for k in keys):
        numeric = _types(node) and set(_types(node)) <= {"integer", "number"}
        if numeric and "enum" not in node and "const" not in node:
            return Decimal(-span), False, Decimal(span), False
        return None
    for k in keys:
        if k in node and (isinstance(node[k], bool) or not isinstance(node[k], (int, float))):
            raise UserError(f"{_where(path)}: {k} must be a number")
        if isinstance(node.get(k), float) and not math.isfinite(node[k]):
            raise UserError(f"{_where(path)}: {k} must be a finite number, not {node[k]!r}")
    lows = [(_decimal(node[k]), k == "exclusiveMinimum")
            for k in ("minimum", "exclusiveMinimum") if k in node]
    highs = [(_decimal(node[k]), k == "exclusiveMaximum")
             for k in ("maximum", "exclusiveMaximum") if k in node]
    if lows:  # the greatest low; at a tie the exclusive one
        lo, lo_open = max(lows)
    if highs:  # the least high; at a tie the exclusive one
        hi, hi_open = min(highs, key=lambda b: (b[0], not b[1]))
    if not lows:
        lo, lo_open = Decimal((math.ceil(hi) - 1 if hi_open else math.floor(hi)) - span), False
    if not highs:
        hi, hi_open = Decimal((math.floor(lo) + 1 if lo_open else math.ceil(lo)) + span), False
    digits = max(len(str(abs(int(b)))) for b in (lo, hi))
    if digits > MAX_NUMBER_DIGITS:
        raise UserError(
            f"{_where(path)}: range too wide to enforce (a bound of {digits} digits, at most "
            f"{MAX_NUMBER_DIGITS}); narrow minimum/maximum"
        )
    digits = max(len(str(abs(int(b)))) + len(decimal_digits(b)) for b in (lo, hi))
    if digits > MAX_NUMBER_DIGITS:
        raise UserError(
            f"{_where(path)}: range too fine to enforce (a bound of {digits} digits with its "
            f"decimals, at most {MAX_NUMBER_DIGITS}); give minimum/maximum fewer decimals"
        )
    if _types(node) == ["integer"]:
        first, last = _integers((lo, lo_open, hi, hi_open))
        if last < first:
            raise Unsatisfiable(f"{_where(path)}: no integer lies in its range")
        return Decimal(first), False, Decimal(last), False
    if hi < lo or (hi == lo and (lo_open or hi_open)):
        raise Unsatisfiable(f"{_where(path)}: no number lies in its range")
    return lo, lo_open, hi, hi_open


def _integers(bounds: NumberRange) -> tuple[int, int]:
    """The least and the greatest integer in a range (the first greater when there is none)."""
    lo, lo_open, hi, hi_open = bounds
    first = math.floor(lo) + 1 if lo_open else math.ceil(lo)
    last = math.ceil(hi) - 1 if hi_open else math.floor(hi)
    return first, last


def _lengths_with_pattern(node: Mapping[str, Any]) -> bool:
    """A string schema with ``pattern`` or ``format`` and a length bound: outlines-core's
    regex keeps only the length, so the two are enforced as two languages (``ValueHole``'s
    ``bound``, ``_string_bound``)."""
    return (
        _types(node) == ["string"]
        and ("pattern" in node or "format" in node)
        and ("minLength" in node or "maxLength" in node)
        and not any(k in node for k in ("enum", "const", "anyOf"))
    )


_PLAIN_CHAR = r'[^"\\\x00-\x1f]'
"""A character a JSON string holds as itself (no quote, backslash or control character)."""


_NOT_PLAIN = r'[\x00-\x1f"\\]'
"""What a JSON string holds only escaped: a control character, a quote, a backslash."""
_NOT_PLAIN_CHARS = "".join(map(chr, range(0x20))) + '"\\'
_NO_CHARACTER = r"[^\x00-\x{10FFFF}]"


def _json_plain(pattern: str) -> str:
    """A string schema's ``pattern`` (in the engine's syntax, matched between the quotes of
    the value's JSON text) with each class and ``.`` narrowed to characters a JSON string
    holds as themselves (``_PLAIN_CHAR``), and each literal quote, backslash or control
    character as no character at all. The regex writes the match as it is, so a string
    inside an array, a union or a list of types (one language, no ``_string_bound``)
    matching ``^[^@]+@[^@]+$`` was written with a raw control character (the fill crashed
    with a ``JSONDecodeError``) or a quote that closed it early (``["x", "y@z"]``, whose
    ``"x"`` fails the pattern). A class that holds none of them is kept as written, and a
    negated one takes them in (``[^@\x00-\x1f"\\]``), so the size estimate
    (``unmask.infill.dfa``) still reads it. Raw whitespace where the ``x`` flag is on
    (after ``(?x)`` to the end of its group, inside ``(?x:..)``, not inside ``(?-x:..)``)
    is kept: the engine ignores it there."""

    def narrowed(text: str) -> str:
        """A class (bracketed, or an escape such as ``\\S``) without ``_NOT_PLAIN``."""
        try:  # as Python reads it, where it reads it as the engine does
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if "[:" not in text and "{" not in text and not re.search(
                        text, _NOT_PLAIN_CHARS):
                    return text
        except (re.error, RecursionError, OverflowError):
            pass
        if text[:1] == "\\" and text[1:2] in ("S", "W", "D", "P"):
            return f"[^{text[0]}{text[1].lower()}{text[2:]}{_NOT_PLAIN[1:]}"
        if text.startswith("[^") and "[" not in text[2:] and not any(
                op in text for op in ("--", "&&", "~~")):
            return text[:-1] + _NOT_PLAIN[1:]
        return f"[{text}--{_NOT_PLAIN}]"

    def escape(text: str) -> str:
        hexed = _HEX_ESCAPE.fullmatch(text)
        if hexed:
            code = int(next(g for g in hexed.groups() if g), 16)
            return _NO_CHARACTER if code < 0x20 or chr(code) in '"\\' else text
        if text[1:] in ('"', "\\") or text[1:] in tuple("nrtfvae"):
            return _NO_CHARACTER
        return narrowed(text) if text[1:2] in tuple("sSwWdDpP") else text

    verbose, stack, comment, flag_end = [False], [], [False], [-1]  # x here, at each group

    def literal(text: str, i: int) -> str:
        c = text[i]
        if comment[0] or (verbose[0] and c == "#"):  # a verbose comment runs to a newline
            comment[0] = c != "\n"
        elif c == "(":
            flags = _FLAGS.match(text, i)
            stack.append(verbose[0])
            if flags is not None:
                on, _, off = flags.group(1).partition("-")
                x = False if "x" in off else True if "x" in on else verbose[0]
                if flags.group(2) == ")":  # (?x): the rest of the enclosing group
                    stack.pop()
                    flag_end[0] = flags.end() - 1
                verbose[0] = x
        elif c == ")" and i != flag_end[0] and stack:
            verbose[0] = stack.pop()
        if verbose[0] and c in "\t\n\v\f\r":  # ignored by ``(?x)``, and a comment's end
            return c
        return _NO_CHARACTER if ord(c) < 0x20 or c == '"' else c

    out = _map_classes(pattern, escape, narrowed, "[^\\n" + _NOT_PLAIN[1:], literal)
    assert out is not None  # none of them gives None
    return out


def _string_bound(node: Mapping[str, Any]) -> str | None:
    """The second language of a string value with a ``pattern`` (and its length bound, if
    any): JSON text of plain characters. The pattern's regex is written between the quotes
    as it matches, so a quote, backslash or control character it needs would break the JSON
    (or, escaped, be another string); such a pattern is refused as unsatisfiable. A
    ``format`` with a length bound: the length's regex (our formats are plain). None: one
    language does."""
    if _types(node) != ["string"] or any(k in node for k in ("enum", "const", "anyOf")):
        return None
    lo, hi = node.get("minLength", 0), node.get("maxLength")
    if "pattern" in node:
        return f'"{_PLAIN_CHAR}{{{lo},{"" if hi is None else hi}}}"'
    if _lengths_with_pattern(node):
        lengths = {k: node[k] for k in ("minLength", "maxLength") if k in node}
        return schema_regex({"type": "string", **lengths})
    return None


_PLAIN = {"type", "minLength", "maxLength", "strict", "name", *_NOTES}


def _plain_string(node: Mapping[str, Any]) -> bool:
    """A string schema with at most a length (no pattern, format, enum, const...): filled as
    a ``<text>`` hole is (``text_value``): a letter or digit first, no space at the end, and
    a leading space-led token's space dropped (the demo wrote ``" 1"`` for
    ``"minLength": 2``). A ``pattern`` gives any other language."""
    return _types(node) == ["string"] and not set(node) - _PLAIN


def _composite(node: Mapping[str, Any], types: list[str]) -> bool:
    """Whether a hole of ``node`` may hold an array or object (``ValueHole.composite``)."""
    if "enum" in node or "const" in node:
        values = node.get("enum", []) if "enum" in node else [node["const"]]
        return any(isinstance(v, (list, dict)) for v in values)
    if any(k in node for k in ("anyOf", "oneOf", "allOf", "$ref", "not")):
        return True
    return not types or bool({"array", "object"} & set(types))


def _types(node: Mapping[str, Any]) -> list[str]:
    t = node.get("type")
    return [t] if isinstance(t, str) else list(t or [])


def _marked(node: Any, root: Mapping[str, Any], path: str, marks: dict[str, str],
            depth: int = 0, plain: bool = True) -> Any:
    """A copy of ``node`` with every numeric range replaced by a ``const`` marker, whose regex
    ``schema_regex`` substitutes (the library would drop the range), and every ``pattern``
    narrowed to plain JSON characters (``_json_plain``), but ``node``'s own without
    ``plain``."""
    if node is True or (isinstance(node, Mapping) and not set(node) - set(_NOTES)):
        return _marked(dict(ANY_VALUE), root, path, marks, depth + 1, plain)  # numbers in range
    if not isinstance(node, Mapping):
        return node
    if depth > 32:  # a recursive $ref that check_schema did not see (schema_regex alone)
        raise UserError(f"{_where(path)}: nested too deep (recursive $ref?)")
    node = _resolve(node, root, path)
    if node is True or (isinstance(node, Mapping) and not set(node) - set(_INERT)):
        # a $ref to {} (the library's bare alternation broke the JSON)
        return _marked(dict(ANY_VALUE), root, path, marks, depth + 1, plain)
    node = _other_types_dropped(_by_type(node, root, path))
    if _lengths_with_pattern(node):
        raise UserError(
            f"{_where(path)}: pattern or format together with minLength/maxLength can only be "
            "enforced on a value of its own, not inside anyOf, a list of types "
            "or a variable-length array"
        )
    node = _prefix_exactly(node, path)
    if _types(node) == ["array"] and "items" not in node and "prefixItems" not in node:
        node = {**node, "items": True}  # any item: a scalar, as for ``{}`` below
    if _types(node) == ["object"] and not node.get("properties") and node.get(
            "additionalProperties", True) in (True, {}):
        # any object: each property holds any scalar (``ANY_VALUE``, numbers in range); the
        # library's own value regex has an unbounded exponent, and ``-22.02e+7246`` parsed
        # to -inf, which the output then wrote as -Infinity, not JSON
        node = {**node, "additionalProperties": dict(ANY_VALUE)}
    elif _types(node) == ["object"] and "properties" not in node and node.get(
            "additionalProperties") is False:
        node = {**node, "properties": {}}  # no property at all: {} (outlines-core refused)
    numeric = bool(_types(node)) and set(_types(node)) <= {"integer", "number"}
    bounds = _number_bounds(node, path) if numeric else None  # (a string's is moot)
    if bounds is not None:
        if _types(node) == ["integer"]:
            regex = int_range(*_integers(bounds))
        else:
            regex = _number_regex(bounds)
        mark = _MARK.format(len(marks))
        marks[mark] = regex
        return {"const": mark}
    if _types(node) == ["string"] and node.get("format") in FORMATS:
        mark = _MARK.format(len(marks))
        marks[mark] = _format_regex(node["format"])
        return {"const": mark}
    out: dict[str, Any] = {}
    names = {n: _key_mark(n, marks) for n in node.get("properties") or {}}
    for k, v in node.items():
        if k == "properties":
            out[k] = {names[n]: _marked(s, root, f"{path}.{n}", marks, depth + 1)
                      for n, s in v.items()}
        elif k == "required" and isinstance(v, list):
            out[k] = [names.get(n, n) for n in v]
        elif k in ("$defs", "definitions"):
            continue  # every $ref is followed here (marking them all recursed forever on a
            # recursive definition, used or not)
        elif (k == "items" and (v is True or isinstance(v, Mapping))) or (
            k == "additionalProperties" and isinstance(v, Mapping)
        ):
            where = f"{path}[]" if k == "items" else f"{path}.{k}"
            out[k] = _marked(v, root, where, marks, depth + 1)
        elif k in ("prefixItems", "anyOf"):  # an error names the branch as check_schema does
            out[k] = [_marked(s, root, f"{path}[{i}]" if k == "prefixItems" else
                              f"{path}.{k}[{i}]", marks, depth + 1) for i, s in enumerate(v)]
        elif k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "uniqueItems"):
            continue
        elif k == "pattern" and isinstance(v, str):
            out[k] = _anchored(_json_plain(ecma_classes(v)) if plain else ecma_classes(v))
        else:
            out[k] = copy.deepcopy(v)
    return out


_OBJECT_OR_ARRAY = ("properties", "required", "additionalProperties", "items", "prefixItems",
                    "minItems", "maxItems")


_OBJECT_ONLY = ("properties", "required", "additionalProperties")
_ARRAY_ONLY = ("items", "prefixItems", "minItems", "maxItems")


def _other_types_dropped(node: Mapping[str, Any]) -> Mapping[str, Any]:
    """A typed node without the object (array) keywords its type does not admit: they say
    nothing of its values, but outlines-core's regex wrote an object for any node with
    ``properties`` and an array for one with ``prefixItems``, whatever its ``type``
    (``{"type": "null", "properties": {...}}``, as a ``$ref`` and the keywords beside it
    merge, gave ``{}``)."""
    types = set(_types(node))
    if not types or "anyOf" in node:
        return node
    drop = (() if "object" in types else _OBJECT_ONLY) + (() if "array" in types else _ARRAY_ONLY)
    return {k: v for k, v in node.items() if k not in drop}


def _prefix_exactly(node: Mapping[str, Any], path: str) -> Mapping[str, Any]:
    """An array schema with ``prefixItems`` (or ``items: false``) as the exact items a value
    holds, as the skeleton writes them (``schema_form``): the prefix cut to ``maxItems``, then
    ``items`` up to ``minItems``. The library's regex writes the prefix alone, whatever the
    counts (two items for ``maxItems: 1``), and refuses ``items: false``."""
    fixed = node.get("prefixItems")
    if _types(node) != ["array"] or (fixed is None and node.get("items") is not False):
        return node
    fixed = fixed or []
    size = min(max(node.get("minItems", 0), len(fixed)), node.get("maxItems", math.inf))
    if size > len(fixed) and node.get("items") is False:
        raise UserError(f"{_where(path)}: minItems {node.get('minItems')} but items is false "
                        f"after {len(fixed)} prefixItems: no array satisfies it")
    if size > MAX_FORM_VALUES:
        raise UserError(f"{_where(path)}: the form would have over {MAX_FORM_VALUES} values; "
                        "lower minItems")
    if size == 0:
        return {"const": []}
    rest = {k: v for k, v in node.items() if k not in ("minItems", "maxItems", "items")}
    items = node.get("items", True)
    return {**rest, "prefixItems": [fixed[i] if i < len(fixed) else items for i in range(size)]}


def _anchored(pattern: str) -> str:
    """A schema ``pattern`` as the regex of the whole string: JSON Schema's pattern is a
    search, so an end left open by an anchor at the other (``^b``: starts with b) admits any
    plain JSON characters (the engine refused a lone ``^`` inside the quotes, and ``^b``
    admitted no string); one anchored at both ends, or at neither, is matched whole (the
    narrowing keeps the model writing the pattern itself rather than text around it)."""
    branches = top_level_branches(pattern)
    if len(branches) > 1:  # ``^a$|^b$``: anchors belong to each branch (whole_pattern only
        return "(?:" + "|".join(map(_anchored, branches)) + ")"  # stripped the outer two)
    core, start, end = anchors(pattern)
    if start == end:
        return core
    return f"(?:{core}){_PLAIN_CHAR}*" if start else f"{_PLAIN_CHAR}*(?:{core})"


def _searched(node: Mapping[str, Any]) -> Mapping[str, Any]:
    """A string schema whose unanchored ``pattern`` no whole string of its ``minLength`` to
    ``maxLength`` characters matches, with the pattern as the search JSON Schema reads it
    (``^.*(?:pattern)``: any string that contains a match): the whole-string narrowing of
    ``_anchored`` left no value, and ``{"pattern": "\\d{2}", "minLength": 5}``, which
    ``"12abc"`` satisfies, was refused as "no value of this tokenizer's tokens satisfies
    it". Lengths as Python's parser counts a pattern's matches (characters, as JSON Schema
    counts); a pattern it cannot read is left as it is."""
    import re._parser as parser

    pattern = node.get("pattern")
    if not isinstance(pattern, str) or _types(node) != ["string"] or not (
            "minLength" in node or "maxLength" in node):
        return node
    if any(anchors(b)[1] or anchors(b)[2] for b in top_level_branches(pattern)):
        return node  # anchored: as it spells (``whole_pattern`` also rewrites a group's inside)
    try:
        shortest, longest = parser.parse(pattern).getwidth()
    except (re.error, RecursionError, OverflowError, ValueError, TypeError):
        return node
    lo, hi = node.get("minLength", 0), node.get("maxLength")
    if longest >= lo and (hi is None or shortest <= hi):
        return node
    return {**node, "pattern": f"^.*(?:{pattern})"}


def _key_mark(name: str, marks: dict[str, str]) -> str:
    """``name``, or for a property name JSON must escape (a quote, backslash or control
    character: the library wrote it raw, and the output did not parse) a marker that
    ``schema_regex`` replaces by the regex of its escaped spelling."""
    if _PLAIN_KEY.fullmatch(name):
        return name
    mark = _KEY_MARK.format(len(marks))
    spelt = json.dumps(name, ensure_ascii=False)[1:-1]
    marks[mark] = "".join(c if c.isascii() and c.isalnum() else f"\\x{{{ord(c):x}}}" for c in spelt)
    return mark


def _by_type(node: Mapping[str, Any], root: Mapping[str, Any], path: str) -> Mapping[str, Any]:
    """``node`` as an ``anyOf`` of single-type schemas where outlines-core's regex would drop
    keywords: a list of types (``{"type": ["integer", "null"], "minimum": 5}``: the range
    was dropped, 4 written), no type next to a range or length (any scalar, each with the
    keywords that apply to it), and keywords beside an ``anyOf`` (each branch gets them; a
    branch they leave no value in is dropped)."""
    rest = {k: v for k, v in node.items() if k not in _INERT}
    if "anyOf" in rest and len(rest) > 1:
        siblings = {k: v for k, v in rest.items() if k != "anyOf"}
        branches = []
        for i, sub in enumerate(rest["anyOf"]):
            try:
                branches.append(_resolve({"allOf": [siblings, sub]}, root, f"{path}.anyOf[{i}]"))
            except UserError:  # no value of this branch satisfies the keywords beside it
                continue
        if not branches:
            raise UserError(f"{_where(path)}: no anyOf branch admits a value of the keywords "
                            f"beside it ({', '.join(sorted(siblings))})")
        return {"anyOf": branches}
    if "anyOf" in rest or "enum" in rest or "const" in rest:
        return node
    types = _types(rest)
    if not types and any(k in rest for k in _OBJECT_OR_ARRAY):
        # an object or array without a type: typed by its keywords (the library's regex
        # refused {"additionalProperties": true} or {"minItems": 1} as "unsupported")
        types = [t for t, keys in (("object", _OBJECT_ONLY), ("array", _ARRAY_ONLY))
                 if any(k in rest for k in keys)]
        if len(types) == 1:
            return {**node, "type": types[0]}
    if not types and len(rest) > 0:
        types = list(ANY_VALUE["type"])
    if len(types) < 2:
        return node
    return {"anyOf": [{**rest, "type": t} for t in types]}


_DATE = (
    r"[1-9][0-9]{3}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    r"|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))"
)
"""A calendar date (no February 29: a regex cannot tell leap years cheaply; the library's
admits February 30 and year 0000)."""
_TIME = r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?"


def _format_regex(fmt: str) -> str:
    """The JSON text of a string of ``format``, as Python's ``jsonschema`` format checker reads
    it. Ours, not outlines-core's: the library's date admits February 30 and year 0, its time
    has no zone and spells its decimal point as a backslash and any character, and its email
    and uri may hold raw quotes and control characters (not valid inside a JSON string); only
    its uuid is used as it is."""
    from outlines_core import json_schema as lib

    zone = "(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
    own = {
        "date": _DATE,
        "time": _TIME + zone,
        "date-time": f"{_DATE}T{_TIME}{zone}",
        "email": r"[a-z0-9._%+-]{1,32}@[a-z0-9-]{1,32}(?:\.[a-z0-9-]{1,16}){0,2}\.[a-z]{2,8}",
        "uri": r"https?://[a-z0-9-]{1,32}(?:\.[a-z0-9-]{1,16}){0,3}(?:/[A-Za-z0-9._~%-]{0,32}){0,4}",
    }
    return f'"{own[fmt]}"' if fmt in own else lib.UUID


def _number_regex(bounds: NumberRange) -> str:
    """A JSON number in range: an integer or a decimal (``float_range``)."""
    lo, lo_open, hi, hi_open = bounds
    first, last = _integers(bounds)
    decimals = float_range(lo, hi, lo_open=lo_open, hi_open=hi_open)
    return f"(?:{int_range(first, last)}|{decimals})" if first <= last else decimals


def schema_regex(
    schema: Mapping[str, Any], root: Mapping[str, Any] | None = None, path: str = "$",
    *, plain: bool = True,
) -> str:
    """The regex of a subschema's JSON text (whitespace: at most one space where JSON allows
    it), with numeric ranges compiled here. Without ``plain``, ``schema``'s own ``pattern``
    is kept as written, not narrowed to the characters a JSON string holds unescaped
    (``_json_plain``): where ``_string_bound`` is intersected with it, so the narrowing
    changes no language (only the size estimate), or where a value's escaped JSON text is
    matched (``_admits``: ``"a\\"@b"`` satisfies ``^[^@]+@[^@]+$``)."""
    from outlines_core import json_schema  # waits for the package's init in another thread

    root = schema if root is None else root
    marks: dict[str, str] = {}
    marked = _marked(schema, root, path, marks, plain=plain)  # every $ref followed
    try:
        regex = json_schema.build_regex_from_schema(json.dumps(marked), " ?")
    except ValueError as e:
        raise UserError(f"{_where(path)}: {str(e).splitlines()[0]}") from None
    for mark, sub in marks.items():
        if mark.startswith(_KEY_MARK[:-2]):  # a property name: its escaped spelling
            regex = regex.replace(f'"{mark}"', f'"{sub}"')
        else:
            regex = regex.replace(f'"{mark}"', f"(?:{sub})")
    return regex


def _width(regex: str, tokenizer: Any, path: str, max_tokens: int, bound: str | None = None
           ) -> int:
    none = UserError(f"{_where(path)}: no value of this tokenizer's tokens satisfies it")
    try:
        auto = value_automaton(regex, bound, tokenizer, _where(path))  # the hole's, once
    except UserError as e:  # the engine's words for a regex of no token sequence: as below
        if str(e).endswith(NO_MATCH):
            raise none from None
        raise
    shortest = auto.min_tokens()
    if shortest is None:
        raise none
    longest = auto.max_tokens()
    return max(shortest, min(max_tokens if longest is None else longest, max_tokens))


def schema_form(
    schema: str | Mapping[str, Any],
    tokenizer: Any,
    *,
    max_value_tokens: int = MAX_VALUE_TOKENS,
    source: str = "schema",
    context: int | None = None,
) -> Any:
    """The form (``unmask.infill.fill_form`` template) a JSON Schema becomes: dicts and lists
    for the fixed structure, ``ValueHole`` s for the values. ``UserError`` when it would
    have more than ``MAX_FORM_VALUES`` values, or more than ``context`` (the model's
    ``max_seq_len``; each value takes a token at least), before they are all built."""
    given = load_schema(schema, source)
    # its patterns as written, bounded together before check_schema compiles any (an enum
    # beside a pattern is checked against the pattern's automaton)
    check_total(_patterns(given, "$"), source)
    given = _pruned(given, given)
    check_schema(given)
    widest = int(max(vocab_of(tokenizer).lengths.max(), 1))  # bytes of the longest token
    dropped: list[int] = []
    spare = 2  # a hole may take in a space before it and drop one inside (unmask.infill.forms)
    root = _unbounded(given, (max_value_tokens + spare) * widest, dropped)
    limit = MAX_FORM_VALUES if context is None else min(context, MAX_FORM_VALUES)
    count = 0

    def counted(n: int, path: str, ahead: bool = False) -> None:
        """``n`` more values at ``path``; ``ahead``: checked, not yet counted (the items of
        a fixed-size array, counted as each is built)."""
        nonlocal count
        if not ahead:
            count += n
        if count + (n if ahead else 0) > limit:
            held = ("" if limit == MAX_FORM_VALUES else  # (words the server codes by)
                    f", more than {CONTEXT_WORDS} {context}) holds")
            raise UserError(f"{_where(path)}: the form would have over {limit} values, at least "
                            f"a token each{held}; lower minItems or use fewer properties")

    def walk(node: Any, path: str) -> Any:
        counted(1, path)
        node = _resolve(node, root, path)
        if node is True or node == {}:
            node = {"type": ["string", "number", "boolean", "null"]}
        types = _types(node)
        if types == ["object"] and node.get("properties") == {} and node.get(
                "additionalProperties") is not False:
            # no property to lay out, but the object may hold others: a hole, as without
            # ``properties`` (it was the skeleton {} alone, refused as "one value only")
            node = {k: v for k, v in node.items() if k != "properties"}
        if types == ["object"] and "properties" in node and "anyOf" not in node:
            return {name: walk(sub, f"{path}.{name}") for name, sub in node["properties"].items()}
        fixed = node.get("prefixItems")
        n = node.get("minItems")
        if types == ["array"] and "anyOf" not in node and fixed is not None:
            # skeleton: the prefix, then ``items`` up to minItems (what outlines-core's regex
            # would drop: it ignores minItems and maxItems next to prefixItems)
            size = min(max(n or 0, len(fixed)), node.get("maxItems", math.inf))
            if size > len(fixed) and node.get("items") is False:
                raise UserError(f"{_where(path)}: minItems {n} but items is false after "
                                f"{len(fixed)} prefixItems: no array satisfies it")
            counted(size, path, ahead=True)  # before building them
            return [walk(fixed[i] if i < len(fixed) else node.get("items", True), f"{path}[{i}]")
                    for i in range(size)]
        if types == ["array"] and "anyOf" not in node and node.get("items") is False:
            if n:
                raise UserError(f"{_where(path)}: minItems {n} but items is false: no array "
                                "satisfies it")
            return []
        if types == ["array"] and "anyOf" not in node:
            if fixed is None and n is not None and n == node.get("maxItems"):
                counted(n, path, ahead=True)  # before building them
                return [walk(node.get("items", True), f"{path}[{i}]") for i in range(n)]
        if _plain_string(node):  # text: a letter or digit first, no whitespace at the end
            regex = f'"{text_value(node.get("minLength", 0), node.get("maxLength"))}"'
            return ValueHole(regex=regex, inner_space=True, spec=f"<schema {path}>", width=0)
        node = _searched(node)
        bound = _string_bound(node)  # a second language, intersected
        if bound is not None:
            node = {k: v for k, v in node.items() if k not in ("minLength", "maxLength")}
        regex = schema_regex(node, root, path, plain=bound is None)
        return ValueHole(regex=regex, width=0, spec=f"<schema {path}>", bound=bound,
                         composite=_composite(node, types))

    languages: list[tuple[str, str]] = []  # of every form built: the second's are added

    def sized(form: Any) -> Any:
        """``form`` with each hole's width, its automaton compiled once every language of the
        form is known to fit the request's bound on them together (``check_total``), with
        those of the form built before it (a dropped ``maxLength`` built as given: both
        compile, so both count; one language of both counts once)."""
        holes = _hole_list(form)
        languages.extend((_where(_path(h)), r) for h in holes for r in (h.regex, h.bound) if r)
        check_total(languages, source)
        return _with_widths(form, lambda h: _width(h.regex, tokenizer, _path(h),
                                                   max_value_tokens, h.bound))

    form = sized(walk(root, "$"))
    if dropped and (_widest_hole(form) + spare) * widest >= min(dropped):
        # a hole wide enough to spell a string over a dropped maxLength: build it as given
        root, count = given, 0
        form = sized(walk(root, "$"))
    if not _holes(form):
        raise UserError(f"{source}: admits one value only "
                        f"({json.dumps(form, ensure_ascii=False)[:60]}), nothing to fill")
    return form


_SUBSCHEMAS = ("properties", "$defs", "definitions")
_SUBSCHEMA = ("items", "additionalProperties")
_SUBSCHEMA_LISTS = ("prefixItems", "anyOf", "oneOf", "allOf")


def _unbounded(node: Any, chars: int, dropped: list[int]) -> Any:
    """A schema with every ``maxLength`` over ``chars`` (the most characters a hole of
    ``MAX_VALUE_TOKENS`` tokens can spell) dropped, each appended to ``dropped``: a longer
    string cannot be written in the hole anyway (``schema_form`` checks the widths and builds
    the schema as given otherwise), and its counted repetition was refused as too large
    (``"maxLength": 5000``) or compiled for 30 s (1000). Nodes with ``enum``/``const`` keep
    theirs (their values are written as they are)."""
    if not isinstance(node, Mapping):
        return node
    out = dict(node)
    hi = out.get("maxLength")
    if "enum" not in out and "const" not in out and isinstance(hi, int) and hi > chars:
        lo = out.get("minLength", 0)
        if isinstance(lo, int) and lo <= chars:
            dropped.append(hi)
            del out["maxLength"]
    for key in _SUBSCHEMAS:
        if isinstance(out.get(key), Mapping):
            out[key] = {n: _unbounded(sub, chars, dropped) for n, sub in out[key].items()}
    for key in _SUBSCHEMA:
        if key in out:
            out[key] = _unbounded(out[key], chars, dropped)
    for key in _SUBSCHEMA_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [_unbounded(sub, chars, dropped) for sub in out[key]]
    return out


_NAMED_SCHEMAS = ("$defs", "definitions", "dependentSchemas", "patternProperties")
"""Keywords whose value maps names to schemas (``properties`` aside: named as values are)."""


def _patterns(doc: Any, path: str) -> list[tuple[str, str]]:
    """(where, pattern) of every ``pattern`` a schema document states, anywhere in it (not in
    values: ``enum``, ``const``, ``default``, ``examples``). Those keywords are skipped in a
    schema only: the entries of a map of named schemas (``properties``, ``$defs``, ...) are
    schemas whatever their names (``{"$defs": {"const": {...}}}``)."""
    out: list[tuple[str, str]] = []
    stack = [(doc, path)]
    while stack:  # iterative: a schema may nest deep
        node, at = stack.pop()
        if isinstance(node, Mapping):
            if isinstance(node.get("pattern"), str):
                out.append((_where(at), node["pattern"]))
            for k, v in node.items():
                if k == "properties" and isinstance(v, Mapping):  # named as values are
                    stack.extend((sub, f"{at}.{name}") for name, sub in v.items())
                elif k in _NAMED_SCHEMAS and isinstance(v, Mapping):
                    stack.extend((sub, f"{at}.{k}.{name}") for name, sub in v.items())
                elif isinstance(v, Mapping | list) and k not in ("enum", "const", *_NOTES):
                    stack.append((v, f"{at}[]" if k == "items" else f"{at}.{k}"))
        elif isinstance(node, list):
            stack.extend((v, f"{at}[{i}]") for i, v in enumerate(node))
    return out[::-1]


def _path(hole: ValueHole) -> str:
    """Where a hole of ``schema_form`` stands (its spec is ``<schema PATH>``)."""
    return hole.spec.removeprefix("<schema ").removesuffix(">")


def _hole_list(form: Any) -> list[ValueHole]:
    """The ``ValueHole`` s of ``form``, in its order."""
    if isinstance(form, ValueHole):
        return [form]
    items = form.values() if isinstance(form, Mapping) else form if isinstance(form, list) else []
    return [h for v in items for h in _hole_list(v)]


def _with_widths(form: Any, width: Any) -> Any:
    """``form`` with each ``ValueHole`` h given ``width(h)`` tokens."""
    if isinstance(form, ValueHole):
        return dataclasses.replace(form, width=width(form))
    if isinstance(form, Mapping):
        return {k: _with_widths(v, width) for k, v in form.items()}
    if isinstance(form, list):
        return [_with_widths(v, width) for v in form]
    return form


def _widest_hole(form: Any) -> int:
    """The most tokens a hole of ``form`` has."""
    if isinstance(form, ValueHole):
        return form.width
    items = form.values() if isinstance(form, Mapping) else form if isinstance(form, list) else []
    return max((_widest_hole(v) for v in items), default=0)


def _holes(form: Any) -> bool:
    """Whether a form holds a ``ValueHole``."""
    if isinstance(form, ValueHole):
        return True
    items = form.values() if isinstance(form, Mapping) else form if isinstance(form, list) else []
    return any(_holes(v) for v in items)


def fill_schema(
    model: MaskPredictor,
    tokenizer: Any,
    schema: str | Mapping[str, Any],
    config: SampleConfig | None = None,
    *,
    generator: torch.Generator | None = None,
    step_callback: StepCallback | None = None,
    max_value_tokens: int = MAX_VALUE_TOKENS,
    source: str = "schema",
    max_repair_calls: int | None = None,
    start_ids: Sequence[int] = (),
) -> FormResult:
    """Fill a JSON document that validates against ``schema`` in one diffusion pass
    (``schema_form`` then ``fill_form``; ``max_repair_calls`` and ``start_ids``, a published
    model's BOS, as there)."""
    form = schema_form(schema, tokenizer, max_value_tokens=max_value_tokens, source=source,
                       context=_max_seq_len(model))
    if not isinstance(form, (dict, list)):  # a scalar schema: one hole, no skeleton
        form = [form]
        res = fill_form(
            model,
            tokenizer,
            form,
            config,
            generator=generator,
            step_callback=step_callback,
            source=source,
            max_repair_calls=max_repair_calls,
            start_ids=start_ids,
        )
        inner = res.text.strip()[1:-1].strip()
        return FormResult(
            text=inner,
            value=res.value[0],
            holes=res.holes,
            nfe=res.nfe,
            repaired=res.repaired,
            tokens=list(tokenizer.encode(inner)),
        )
    return fill_form(
        model,
        tokenizer,
        form,
        config,
        generator=generator,
        step_callback=step_callback,
        source=source,
        max_repair_calls=max_repair_calls,
        start_ids=start_ids,
    )


_SCALAR = r'(?:"[^"\\\x00-\x1f\x7f]*"|-?(?:0|[1-9][0-9]*)|true|false|null)'
_KEY = r'"[A-Za-z_][A-Za-z0-9_]*"'
JSON_OBJECT = rf"\{{(?:{_KEY}: {_SCALAR}(?:, {_KEY}: {_SCALAR})*)?\}}"
"""``response_format: {"type": "json_object"}``: a flat JSON object with string, integer,
boolean or null values, as long as the request's ``max_tokens`` allows (a language small
enough to compile fast for any vocabulary; a schema says more)."""


def constraint_form(
    tokenizer: Any,
    *,
    json_schema: str | Mapping[str, Any] | None = None,
    json_object: bool = False,
    regex: str | None = None,
    choice: list[str] | None = None,
    max_tokens: int = MAX_VALUE_TOKENS,
    source: str = "response_format",
) -> tuple[Any, bool]:
    """(form, parse) for one structured-output request as OpenAI (``response_format``) and
    vLLM (``guided_json`` / ``guided_regex`` / ``guided_choice``) spell it: exactly one
    constraint. ``parse``: the output is JSON (``fill_form(..., parse=parse)``)."""
    given = [x for x in (json_schema, regex, choice) if x is not None] + (
        [1] if json_object else []
    )
    if len(given) != 1:
        raise UserError(f"{source}: give exactly one constraint")
    if json_schema is not None:
        return schema_form(json_schema, tokenizer, max_value_tokens=max_tokens, source=source), True
    if json_object:
        return ValueHole(regex=JSON_OBJECT, width=max_tokens, spec="<json_object>",
                         composite=True), True
    if choice is not None:
        if not choice or any(not isinstance(c, str) or not c for c in choice):
            raise UserError(f"{source}: guided_choice needs non-empty strings")
        check_unicode(choice, f"{source}: guided_choice")
        import re

        pattern = "|".join(re.escape(c) for c in choice)
        try:
            check_size(pattern, source)
        except UserError:  # its advice is of repetitions: a list of words has none
            raise UserError(
                f"{source}: too large (the choices' automaton has over {MAX_DFA_STATES} "
                f"states, about one per byte of the {len(choice)} choices that no other "
                "choice starts with); send fewer or shorter choices") from None
        width = max(len(tokenizer.encode(c)) for c in choice)
        return ValueHole(regex=pattern, width=width, spec="<choice>"), False
    assert regex is not None
    # its syntax and size, before the worker compiles it (compiled in full over bytes here,
    # it cost as much as its automaton, once more)
    check_syntax(regex, f"{source}: regex {quote_pattern(regex)}")
    check_size(regex, f"{source}: regex {quote_pattern(regex)}")
    return ValueHole(regex=whole_pattern(regex), width=max_tokens, spec="<regex>"), False


def form_width(form: Any, tokenizer: Any, *, source: str, max_seq_len: int | None,
               schema: bool = False) -> int:
    """The tokens the holes of ``form`` (a ``fill_form`` template; ``schema``: a JSON Schema,
    ``schema_form``) take at their widest: what a causal checkpoint writes, a step each; its
    automata compile (``parse_form``, which refuses a form too wide for ``max_seq_len``).
    Here, not in ``unmask.infill.ordered`` (whose ``refuse_loop_options`` takes it): ``forms``
    imports ``fim``, and ``fim`` ``ordered``."""
    if schema:
        form = schema_form(form, tokenizer, source=source, context=max_seq_len)
        if not isinstance(form, (dict, list)):  # a scalar schema: one hole (fill_schema)
            form = [form]
    _, holes, _ = parse_form(form, tokenizer, source=source, max_seq_len=max_seq_len)
    return sum(h.width for h in holes)


__all__ = [
    "JSON_OBJECT",
    "MAX_VALUE_TOKENS",
    "constraint_form",
    "check_schema",
    "fill_schema",
    "form_width",
    "load_schema",
    "schema_form",
    "schema_regex",
]
