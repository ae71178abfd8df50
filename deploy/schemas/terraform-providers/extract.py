#!/usr/bin/env python3
"""Build an offline table of the arguments and blocks of Terraform resource / data source types.

Plain Python 3, standard library only, no network: it reads a provider's source tree that was
downloaded beforehand (see README.md in this folder) and writes one JSON file.

Two readers, one output:

* ``go``: the provider's schema as written in its Go source (terraform-plugin-sdk/v2
  ``map[string]*schema.Schema`` literals, and terraform-plugin-framework ``schema.Schema`` for the
  few framework data sources).  A small evaluator follows the helper functions, package variables,
  ``tpgresource.MergeSchemas`` / ``DatasourceSchemaFromResourceSchema`` / ``Add*FieldsToSchema``
  that the provider uses to assemble a schema.  This gives the exact names, and whether each is
  settable (Optional/Required) or read-only (Computed only), the way Terraform itself classifies
  them: a ``TypeList``/``TypeSet`` of ``*schema.Resource`` is a nested block unless it is
  Computed-only (then it is a read-only attribute), everything else is an attribute; SDKv2 adds
  ``id`` (read-only) and, where the resource declares ``Timeouts``, a ``timeouts`` block.
* ``docs``: the provider's documentation pages (``website/docs/{r,d}/*.html.markdown``, or
  tfplugindocs' ``docs/resources/*.md``): the ``* `name` - ...`` bullets under "## Argument
  Reference" and "## Attributes Reference", and the "The `x` block supports:" sections.  The pages
  are hand-written and uneven (fields only shown in examples, Beta-only fields of google-beta on
  the same page, fields under the wrong block), so this reader only cross-checks the Go reader
  (``--compare-docs``), together with the ``google/services/*/*_meta.yaml`` field lists that the
  google provider ships; it is not the table's source.

Output shape (names only, sorted; no Terraform meta-arguments):

    {"provider": ..., "version": ..., "source": {...},
     "resources": {TYPE: SCHEMA}, "data_sources": {TYPE: SCHEMA}}
    SCHEMA = {"arguments": [...], "attributes": [...], "blocks": {NAME: SCHEMA}}

"arguments" are settable (Optional or Required, including Optional+Computed ones, which can also be
referenced); "attributes" are read-only (Computed only) and may only be referenced.

Examples (see README.md):

    python3 extract.py google --src /tmp/tpg-6.49.0 --version 6.49.0 --commit <sha> \\
        --resource google_container_cluster ... --data-source google_project ... \\
        --compare-docs -o google-6.49.0.json
    python3 extract.py random --src /tmp/random-3.7.2 --version 3.7.2 --commit <sha> \\
        --resource random_password -o random-3.7.2.json
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import re
import sys

# --------------------------------------------------------------------------------------------
# Go tokenizer (with Go's automatic semicolon insertion, so statements can be split on ';')
# --------------------------------------------------------------------------------------------

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>[ \t\r]+)
  | (?P<nl>\n)
  | (?P<lcomment>//[^\n]*)
  | (?P<bcomment>/\*.*?\*/)
  | (?P<raw>`[^`]*`)
  | (?P<str>"(?:\\.|[^"\\\n])*")
  | (?P<rune>'(?:\\.|[^'\\\n])+')
  | (?P<num>\d[\w.]*)
  | (?P<ident>[A-Za-z_]\w*)
  | (?P<op>\.\.\.|:=|&&|\|\||==|!=|<=|>=|<-|\+\+|--|[-+*/%&|^<>=!]=?|[()\[\]{},;:.~])
    """,
    re.S | re.X,
)
_SEMI_AFTER_KW = {"return", "break", "continue", "fallthrough"}
_GO_KEYWORDS = {
    "break", "case", "chan", "const", "continue", "default", "defer", "else", "fallthrough", "for", "func",
    "go", "goto", "if", "import", "interface", "map", "package", "range", "return", "select", "struct",
    "switch", "type", "var",
}


class Tok:
    __slots__ = ("kind", "text")

    def __init__(self, kind, text):
        self.kind, self.text = kind, text

    def __repr__(self):
        return self.text


def tokenize(src: str) -> list[Tok]:
    toks: list[Tok] = []
    pos = 0
    n = len(src)

    def semi_needed():
        # Go inserts ';' at a line end after an identifier (not a keyword, except the four below),
        # a literal, or one of ) ] } ++ --
        if not toks:
            return False
        t = toks[-1]
        if t.kind == "ident":
            return t.text not in _GO_KEYWORDS or t.text in _SEMI_AFTER_KW
        if t.kind in ("num", "str", "raw", "rune"):
            return True
        return t.text in (")", "]", "}", "++", "--")

    while pos < n:
        m = _TOKEN_RE.match(src, pos)
        if not m:
            raise ValueError(f"cannot tokenize at {src[pos:pos + 40]!r}")
        pos = m.end()
        kind = m.lastgroup
        text = m.group()
        if kind == "ws" or kind == "lcomment":
            continue
        if kind == "bcomment":
            if "\n" in text and semi_needed():
                toks.append(Tok("op", ";"))
            continue
        if kind == "nl":
            if semi_needed():
                toks.append(Tok("op", ";"))
            continue
        if kind == "op":
            toks.append(Tok("op", text))
        else:
            toks.append(Tok(kind, text))
    if semi_needed():
        toks.append(Tok("op", ";"))
    return toks


_OPEN = {"(": ")", "[": "]", "{": "}"}
_CLOSE = {")", "]", "}"}


def match_close(toks, i):
    """index of the bracket closing toks[i]"""
    depth = 0
    for j in range(i, len(toks)):
        t = toks[j].text
        if toks[j].kind != "op":
            continue
        if t in _OPEN:
            depth += 1
        elif t in _CLOSE:
            depth -= 1
            if depth == 0:
                return j
    raise ValueError("unbalanced brackets")


def split_top(toks, sep):
    """split a token list on a separator at bracket depth 0"""
    parts, cur, depth = [], [], 0
    for t in toks:
        if t.kind == "op" and t.text in _OPEN:
            depth += 1
        elif t.kind == "op" and t.text in _CLOSE:
            depth -= 1
        if depth == 0 and t.kind == "op" and t.text == sep:
            parts.append(cur)
            cur = []
        else:
            cur.append(t)
    parts.append(cur)
    return parts


def strip_semis(toks):
    return [t for t in toks if not (t.kind == "op" and t.text == ";")]


def go_string(tok: Tok) -> str:
    if tok.kind == "raw":
        return tok.text[1:-1]
    return json.loads(tok.text)


# --------------------------------------------------------------------------------------------
# Values the evaluator produces
# --------------------------------------------------------------------------------------------


class Opaque:
    """something the evaluator does not model (a function value, an expression, ...)"""

    def __init__(self, text):
        self.text = text

    def __repr__(self):
        return f"Opaque({self.text[:60]})"


class Field(dict):
    """one *schema.Schema: keys Type, Optional, Required, Computed, Elem, ConfigMode, ..."""


class Resource(dict):
    """a *schema.Resource: keys Schema (dict name -> Field), Timeouts (set of names)"""


class SchemaMap(dict):
    """map[string]*schema.Schema"""


class FwSchema(dict):
    """plugin-framework schema: name -> ('attr', flags) or ('block', FwSchema)"""


class ReturnSignal(Exception):
    def __init__(self, value):
        self.value = value


# --------------------------------------------------------------------------------------------
# Go package index
# --------------------------------------------------------------------------------------------

MODULE_PREFIXES = (
    "github.com/hashicorp/terraform-provider-google/",
    "github.com/hashicorp/terraform-provider-google-beta/",
    "github.com/terraform-providers/terraform-provider-random/",
    "github.com/hashicorp/terraform-provider-random/",
)


class GoFile:
    def __init__(self, path, pkgdir):
        self.path = path
        self.pkgdir = pkgdir
        with open(path, encoding="utf-8") as fh:
            self.toks = tokenize(fh.read())
        self.imports: dict[str, str] = {}  # alias -> import path
        self.funcs: dict[str, tuple[list, list, str]] = {}  # name -> (params, body tokens, result type)
        self.methods: dict[tuple[str, str], tuple[list, list, str]] = {}  # (recv type, name) -> ...
        self.vars: dict[str, list] = {}  # name -> expression tokens
        self._index()

    def _index(self):
        toks = self.toks
        i, n = 0, len(toks)
        while i < n:
            t = toks[i]
            if t.kind == "ident" and t.text == "import":
                if toks[i + 1].text == "(":
                    j = match_close(toks, i + 1)
                    for part in split_top(toks[i + 2:j], ";"):
                        self._add_import(part)
                    i = j + 1
                else:
                    j = i + 1
                    while toks[j].text != ";":
                        j += 1
                    self._add_import(toks[i + 1:j])
                    i = j + 1
                continue
            if t.kind == "ident" and t.text == "func":
                j = i + 1
                recv = None
                if toks[j].text == "(":  # method
                    k = match_close(toks, j)
                    recv = [x.text for x in toks[j + 1:k] if x.kind == "ident"][-1]
                    j = k + 1
                name = toks[j].text
                j += 1
                if toks[j].text == "[":  # type parameters
                    j = match_close(toks, j) + 1
                k = match_close(toks, j)
                params = self._params(toks[j + 1:k])
                j = k + 1
                # the result type, up to the body's '{' at depth 0
                rstart = j
                while toks[j].text != "{":
                    if toks[j].text in _OPEN:
                        j = match_close(toks, j)
                    j += 1
                result = " ".join(x.text for x in toks[rstart:j])
                end = match_close(toks, j)
                body = toks[j + 1:end]
                if recv:
                    self.methods[(recv, name)] = (params, body, result)
                else:
                    self.funcs[name] = (params, body, result)
                i = end + 1
                continue
            if t.kind == "ident" and t.text in ("var", "const"):
                if toks[i + 1].text == "(":
                    j = match_close(toks, i + 1)
                    for part in split_top(toks[i + 2:j], ";"):
                        self._add_var(part)
                    i = j + 1
                else:
                    j = i + 1
                    depth = 0
                    while not (depth == 0 and toks[j].text == ";"):
                        if toks[j].text in _OPEN:
                            depth += 1
                        elif toks[j].text in _CLOSE:
                            depth -= 1
                        j += 1
                    self._add_var(toks[i + 1:j])
                    i = j + 1
                continue
            if t.kind == "ident" and t.text == "type":
                # skip type declarations
                j = i + 1
                depth = 0
                while j < n and not (depth == 0 and toks[j].text == ";"):
                    if toks[j].text in _OPEN:
                        depth += 1
                    elif toks[j].text in _CLOSE:
                        depth -= 1
                    j += 1
                i = j + 1
                continue
            i += 1

    def _add_import(self, part):
        part = [x for x in part if x.text != ";"]
        if not part:
            return
        if part[-1].kind not in ("str", "raw"):
            return
        path = go_string(part[-1])
        if len(part) == 2 and part[0].kind == "ident":
            alias = part[0].text
        else:
            alias = path.rstrip("/").split("/")[-1]
            if re.fullmatch(r"v\d+", alias):
                alias = path.rstrip("/").split("/")[-2]
        self.imports[alias] = path

    def _add_var(self, part):
        part = strip_semis(part)
        if not part:
            return
        eq = next((k for k, x in enumerate(part) if x.text == "="), None)
        if eq is None:
            return
        names = [x.text for x in part[:eq] if x.kind == "ident"]
        values = split_top(part[eq + 1:], ",")
        if len(values) == 1:
            self.vars[names[0]] = values[0]
        else:
            for nm, v in zip(names, values):
                self.vars[nm] = v

    @staticmethod
    def _params(toks):
        names = []
        for p in split_top(toks, ","):
            p = [x for x in p]
            if p and p[0].kind == "ident":
                names.append((p[0].text, len(p) > 1 and p[1].text == "..."))
        return names


class GoTree:
    """lazy index of the Go packages of a provider source tree"""

    def __init__(self, root):
        self.root = root
        self.pkgs: dict[str, list[GoFile]] = {}
        self.warnings: list[str] = []
        self.files_read: set[str] = set()

    def pkg(self, pkgdir) -> list[GoFile]:
        if pkgdir not in self.pkgs:
            full = os.path.join(self.root, pkgdir)
            files = []
            if os.path.isdir(full):
                for name in sorted(os.listdir(full)):
                    if name.endswith(".go") and not name.endswith("_test.go"):
                        files.append(GoFile(os.path.join(full, name), pkgdir))
            self.pkgs[pkgdir] = files
        return self.pkgs[pkgdir]

    def pkgdir_for_import(self, path):
        for pre in MODULE_PREFIXES:
            if path.startswith(pre):
                return path[len(pre):]
        return None

    def lookup(self, pkgdir, name, kind):
        for f in self.pkg(pkgdir):
            table = f.funcs if kind == "func" else f.vars
            if name in table:
                self.files_read.add(os.path.relpath(f.path, self.root))
                return f, table[name]
        return None, None


# --------------------------------------------------------------------------------------------
# Evaluator
# --------------------------------------------------------------------------------------------

SCHEMA_PKGS = {
    "github.com/hashicorp/terraform-plugin-sdk/v2/helper/schema",
    "github.com/hashicorp/terraform-plugin-framework/datasource/schema",
    "github.com/hashicorp/terraform-plugin-framework/resource/schema",
    "github.com/hashicorp/terraform-plugin-framework/provider/schema",
    "github.com/hashicorp/terraform-plugin-framework/ephemeral/schema",
}


class Evaluator:
    def __init__(self, tree: GoTree):
        self.tree = tree
        self.depth = 0

    def warn(self, msg):
        if msg not in self.tree.warnings:
            self.tree.warnings.append(msg)

    # -- helpers -----------------------------------------------------------------------------
    def is_schema_pkg(self, f: GoFile, alias):
        return f.imports.get(alias) in SCHEMA_PKGS

    def resolve_pkg(self, f: GoFile, alias):
        path = f.imports.get(alias)
        if path is None:
            return None
        return self.tree.pkgdir_for_import(path)

    # -- expressions -------------------------------------------------------------------------
    def eval(self, toks, f: GoFile, env: dict, ctx=None):
        toks = strip_semis(toks)
        if not toks:
            return Opaque("")
        while toks and toks[0].text in ("&", "*"):
            toks = toks[1:]
        if len(toks) >= 2 and toks[0].text == "(" and match_close(toks, 0) == len(toks) - 1:
            return self.eval(toks[1:-1], f, env, ctx)
        t0 = toks[0]
        text = " ".join(x.text for x in toks)

        if len(toks) == 1:
            if t0.kind in ("str", "raw"):
                return go_string(t0)
            if t0.text == "true":
                return True
            if t0.text == "false":
                return False
            if t0.text == "nil":
                return None
            if t0.kind == "ident":
                if t0.text in env:
                    return env[t0.text]
                return self.global_var(f.pkgdir, t0.text, f)
            return Opaque(text)

        # map[string]*schema.Schema{...}
        if t0.text == "map" and toks[-1].text == "}":
            ob = next(k for k, x in enumerate(toks) if x.text == "{")
            if match_close(toks, ob) == len(toks) - 1:
                return self.schema_map(toks[ob + 1:-1], f, env)

        # bare composite literal, type elided inside a map of *schema.Schema: { Type: ... }
        if t0.text == "{" and match_close(toks, 0) == len(toks) - 1:
            if ctx == "field":
                return self.field(toks[1:-1], f, env)
            return Opaque(text)

        # qualified composite literal: schema.Schema{...}, schema.Resource{...}, ...
        if (len(toks) >= 4 and t0.kind == "ident" and toks[1].text == "." and toks[2].kind == "ident"
                and toks[3].text == "{" and match_close(toks, 3) == len(toks) - 1):
            typ = toks[2].text
            body = toks[4:-1]
            if self.is_schema_pkg(f, t0.text):
                if typ == "Schema":
                    # SDK *schema.Schema, or framework schema.Schema{Attributes:..., Blocks:...}
                    kv = self.kv(body)
                    if "Attributes" in kv or "Blocks" in kv:
                        return self.fw_schema(kv, f, env)
                    return self.field(body, f, env)
                if typ == "Resource":
                    return self.resource(body, f, env)
                if typ == "ResourceTimeout":
                    return {"__timeouts__": sorted(k.lower() for k in self.kv(body))}
                if typ.endswith("Attribute") or typ.endswith("Block") or typ == "NestedAttributeObject" or typ == "NestedBlockObject":
                    return self.fw_element(typ, self.kv(body), f, env)
            return Opaque(text)

        # function call, possibly followed by a selector: f(...), pkg.F(...), F(...).Schema
        call = self.parse_call(toks)
        if call is not None:
            pkg, name, args, rest = call
            value = self.call(f, pkg, name, args, env)
            for sel in rest:
                if isinstance(value, dict) and sel in value:
                    value = value[sel]
                else:
                    return Opaque(text)
            return value

        # qualified identifier pkg.Name (a package variable), or local.Field
        if len(toks) == 3 and t0.kind == "ident" and toks[1].text == "." and toks[2].kind == "ident":
            if t0.text in env:
                base = env[t0.text]
                if isinstance(base, dict) and toks[2].text in base:
                    return base[toks[2].text]
                return Opaque(text)
            pkgdir = self.resolve_pkg(f, t0.text)
            if pkgdir is not None:
                return self.global_var(pkgdir, toks[2].text, f)
            return Opaque(text)

        # map index: local["key"]
        if (len(toks) == 4 and t0.kind == "ident" and toks[1].text == "[" and toks[2].kind in ("str", "raw")
                and toks[3].text == "]" and t0.text in env):
            base = env[t0.text]
            key = go_string(toks[2])
            if isinstance(base, dict) and key in base:
                return base[key]
        return Opaque(text)

    def parse_call(self, toks):
        """(pkg alias or None, name, [arg tokens], [selectors]) for f(...) / pkg.F(...) / ...Schema"""
        if toks[0].kind != "ident":
            return None
        if len(toks) >= 3 and toks[1].text == "(":
            pkg, name, op = None, toks[0].text, 1
        elif len(toks) >= 5 and toks[1].text == "." and toks[2].kind == "ident" and toks[3].text == "(":
            pkg, name, op = toks[0].text, toks[2].text, 3
        else:
            return None
        cl = match_close(toks, op)
        rest_toks = toks[cl + 1:]
        rest = []
        while rest_toks:
            if len(rest_toks) >= 2 and rest_toks[0].text == "." and rest_toks[1].kind == "ident":
                rest.append(rest_toks[1].text)
                rest_toks = rest_toks[2:]
            else:
                return None
        args = [a for a in split_top(toks[op + 1:cl], ",") if strip_semis(a)]
        return pkg, name, args, rest

    def global_var(self, pkgdir, name, f):
        vf, expr = self.tree.lookup(pkgdir, name, "var")
        if vf is None:
            return Opaque(name)
        cache = getattr(vf, "_var_cache", None)
        if cache is None:
            cache = vf._var_cache = {}
        if name not in cache:
            cache[name] = Opaque(name)  # recursion guard
            cache[name] = self.eval(expr, vf, {}, "field")
        return copy.deepcopy(cache[name])

    def kv(self, body):
        out = {}
        for el in split_top(strip_semis(body), ","):
            if not el:
                continue
            parts = split_top(el, ":")
            if len(parts) < 2:
                continue
            key_toks = parts[0]
            val = el[len(key_toks) + 1:]
            if len(key_toks) == 1:
                k = go_string(key_toks[0]) if key_toks[0].kind in ("str", "raw") else key_toks[0].text
            else:
                k = " ".join(x.text for x in key_toks)
            out[k] = val
        return out

    def schema_map(self, body, f, env):
        out = SchemaMap()
        for k, v in self.kv(body).items():
            val = self.eval(v, f, env, "field")
            if not isinstance(val, Field):
                self.warn(f"{os.path.relpath(f.path, self.tree.root)}: field {k!r} could not be evaluated ({val!r})")
                val = Field(Type="?", Optional=True, unresolved=True)
            out[k] = val
        return out

    def field(self, body, f, env):
        fld = Field()
        for k, v in self.kv(body).items():
            if k in ("Optional", "Required", "Computed"):
                val = self.eval(v, f, env)
                if not isinstance(val, bool):
                    self.warn(f"{os.path.relpath(f.path, self.tree.root)}: {k} is not a constant ({' '.join(x.text for x in v)})")
                fld[k] = val is True
            elif k == "Elem":
                fld[k] = self.eval(v, f, env, "field")
            elif k in ("Type", "ConfigMode"):
                fld[k] = " ".join(x.text for x in v)
        return fld

    def resource(self, body, f, env):
        res = Resource()
        kv = self.kv(body)
        if "Schema" in kv:
            sch = self.eval(kv["Schema"], f, env, "field")
            if isinstance(sch, dict):
                res["Schema"] = sch
            else:
                self.warn(f"{os.path.relpath(f.path, self.tree.root)}: Resource.Schema not evaluated ({sch!r})")
                res["Schema"] = SchemaMap()
        if "Timeouts" in kv:
            to = self.eval(kv["Timeouts"], f, env)
            if isinstance(to, dict) and "__timeouts__" in to:
                res["Timeouts"] = to["__timeouts__"]
        return res

    # -- plugin framework --------------------------------------------------------------------
    def fw_schema(self, kv, f, env):
        out = FwSchema()
        for sect in ("Attributes", "Blocks"):
            if sect not in kv:
                continue
            toks = strip_semis(kv[sect])
            ob = next((k for k, x in enumerate(toks) if x.text == "{"), None)
            if ob is None or toks[0].text != "map":
                val = self.eval(toks, f, env)
                if isinstance(val, dict):
                    out.update(val)
                continue
            for name, v in self.kv(toks[ob + 1:-1]).items():
                el = self.eval(v, f, env)
                if isinstance(el, tuple):
                    out[name] = el
                else:
                    self.warn(f"{os.path.relpath(f.path, self.tree.root)}: framework element {name!r} not evaluated")
        return out

    def fw_element(self, typ, kv, f, env):
        if typ.endswith("Block"):
            inner = FwSchema()
            if "NestedObject" in kv:
                obj = self.eval(kv["NestedObject"], f, env)
                if isinstance(obj, FwSchema):
                    inner = obj
            else:
                inner = self.fw_schema(kv, f, env)
            return ("block", inner)
        if typ in ("NestedAttributeObject", "NestedBlockObject"):
            return self.fw_schema(kv, f, env)
        flags = {k: self.eval(kv[k], f, env) is True for k in ("Optional", "Required", "Computed") if k in kv}
        return ("attr", flags)

    # -- calls -------------------------------------------------------------------------------
    def call(self, f, alias, name, args, env):
        if alias is not None and alias in env:
            return Opaque(f"{alias}.{name}()")
        pkgdir = f.pkgdir if alias is None else self.resolve_pkg(f, alias)
        if alias is None and name in ("make", "len", "append"):
            if name == "make":
                return SchemaMap()
            return Opaque(name)
        if pkgdir is None:
            return Opaque(f"{alias}.{name}()")
        builtin = BUILTINS.get(name) if pkgdir.endswith("tpgresource") else None
        vals = [self.eval(a, f, env, "field") for a in args]
        if builtin:
            return builtin(self, vals)
        cf, fn = self.tree.lookup(pkgdir, name, "func")
        if cf is None:
            return Opaque(f"{name}()")
        params, body, result = fn
        local = {}
        for idx, (pname, variadic) in enumerate(params):
            local[pname] = vals[idx:] if variadic else (vals[idx] if idx < len(vals) else None)
        self.depth += 1
        try:
            if self.depth > 40:
                raise RecursionError(name)
            return self.run(body, cf, local, builds_schema=bool(re.search(r"\b(Schema|Resource)\b", result)))
        finally:
            self.depth -= 1

    def run(self, body, f, env, builds_schema=True):
        """interpret the statements of a function body that build a schema"""
        try:
            self.run_block(body, f, env, builds_schema)
        except ReturnSignal as r:
            return r.value
        return Opaque("no return")

    def run_block(self, body, f, env, builds_schema=True):
        for st in split_top(body, ";"):
            if not st:
                continue
            head = st[0].text
            if head == "return":
                vals = split_top(st[1:], ",")
                raise ReturnSignal(self.eval(vals[0], f, env, "field") if vals and vals[0] else None)
            if head in ("if", "for", "switch", "select", "go", "defer"):
                if builds_schema:
                    self.warn(f"{os.path.relpath(f.path, self.tree.root)}: skipped a '{head}' statement while building a schema")
                continue
            if head == "var":
                eq = next((k for k, x in enumerate(st) if x.text == "="), None)
                if eq is not None:
                    env[st[1].text] = self.eval(st[eq + 1:], f, env, "field")
                else:
                    env[st[1].text] = SchemaMap() if "schema" in " ".join(x.text for x in st) else None
                continue
            assign = next((k for k, x in enumerate(st) if x.kind == "op" and x.text in (":=", "=")), None)
            if assign is not None and all(x.text != "(" for x in st[:assign]):
                lhs, rhs = st[:assign], st[assign + 1:]
                self.assign(lhs, rhs, f, env)
                continue
            call = self.parse_call(st)
            if call is not None:
                pkg, name, args, rest = call
                if pkg is None and name == "delete" and len(args) == 2:
                    target = self.eval(args[0], f, env)
                    key = self.eval(args[1], f, env)
                    if isinstance(target, dict) and isinstance(key, str):
                        target.pop(key, None)
                    continue
                if pkg is not None and pkg not in env:
                    pkgdir = self.resolve_pkg(f, pkg)
                    if pkgdir and pkgdir.endswith("tpgresource") and name in BUILTINS:
                        BUILTINS[name](self, [self.eval(a, f, env, "field") for a in args])
                        continue
                    if pkgdir and pkgdir.endswith("tpgresource"):
                        continue  # e.g. logging helpers
                if pkg is None and name in ("println", "panic"):
                    continue
                # a call of a local function with side effects on a schema map is not modelled
                continue

    def assign(self, lhs, rhs, f, env):
        names = split_top(lhs, ",")
        if len(names) > 1:
            return
        lhs = names[0]
        if len(lhs) == 1 and lhs[0].kind == "ident":
            if lhs[0].text != "_":
                env[lhs[0].text] = self.eval(rhs, f, env, "field")
            return
        # m["key"] = value   /   m["key"].Field = value   /   r.Schema = value
        if lhs[0].kind == "ident" and lhs[0].text in env:
            base = env[lhs[0].text]
            path = []
            i = 1
            while i < len(lhs):
                if lhs[i].text == "[" and i + 2 < len(lhs) and lhs[i + 1].kind in ("str", "raw") and lhs[i + 2].text == "]":
                    path.append(go_string(lhs[i + 1]))
                    i += 3
                elif lhs[i].text == "." and i + 1 < len(lhs):
                    path.append(lhs[i + 1].text)
                    i += 2
                else:
                    return
            for p in path[:-1]:
                if not isinstance(base, dict) or p not in base:
                    return
                base = base[p]
            if not isinstance(base, dict) or not path:
                return
            last = path[-1]
            if isinstance(base, Field) and last in ("Optional", "Required", "Computed"):
                base[last] = self.eval(rhs, f, env) is True
            elif isinstance(base, Field) and last == "Elem":
                base[last] = self.eval(rhs, f, env, "field")
            elif isinstance(base, Field):
                return
            else:
                base[last] = self.eval(rhs, f, env, "field")


def _b_merge(ev, vals):
    out = SchemaMap()
    for v in vals:
        if isinstance(v, list):  # variadic
            for x in v:
                if isinstance(x, dict):
                    out.update(copy.deepcopy(x))
        elif isinstance(v, dict):
            out.update(copy.deepcopy(v))
    return out


def _ds_from_resource(schema_map):
    out = SchemaMap()
    for k, v in schema_map.items():
        dv = Field(Type=v.get("Type"), Computed=True, Optional=False, Required=False)
        elem = v.get("Elem")
        if isinstance(elem, Resource) and str(v.get("Type")).endswith(("TypeList", "TypeSet")):
            dv["Elem"] = Resource(Schema=_ds_from_resource(elem.get("Schema", {})))
        else:
            dv["Elem"] = copy.deepcopy(elem)
        out[k] = dv
    return out


def _b_ds(ev, vals):
    return _ds_from_resource(vals[0]) if vals and isinstance(vals[0], dict) else Opaque("ds")


def _fix_flags(required):
    def fn(ev, vals):
        target = vals[0] if vals else None
        keys = []
        for v in vals[1:]:
            keys.extend(v if isinstance(v, list) else [v])
        if isinstance(target, dict):
            for k in keys:
                if isinstance(k, str) and k in target:
                    target[k]["Computed"] = False
                    target[k]["Optional"] = not required
                    target[k]["Required"] = required
                elif isinstance(k, str):
                    ev.warn(f"Add*FieldsToSchema: no field {k!r}")
        return None

    return fn


def _b_fix(ev, vals):
    required = vals[1] is True if len(vals) > 1 else False
    return _fix_flags(required)(ev, [vals[0]] + vals[2:])


def _b_delete(ev, vals):
    target = vals[0] if vals else None
    for v in vals[1:]:
        for k in v if isinstance(v, list) else [v]:
            if isinstance(target, dict) and isinstance(k, str):
                target.pop(k, None)
    return None


BUILTINS = {
    "MergeSchemas": _b_merge,
    "DatasourceSchemaFromResourceSchema": _b_ds,
    "AddRequiredFieldsToSchema": _fix_flags(True),
    "AddOptionalFieldsToSchema": _fix_flags(False),
    "FixDatasourceSchemaFlags": _b_fix,
    "DeleteFieldsFromSchema": _b_delete,
}


# --------------------------------------------------------------------------------------------
# Conversion to the output shape (Terraform's own classification rules, SDKv2 CoreConfigSchema)
# --------------------------------------------------------------------------------------------


def empty_schema():
    return {"arguments": [], "attributes": [], "blocks": {}}


def convert_sdk(schema_map, top=False, timeouts=None):
    out = empty_schema()
    for name, fld in schema_map.items():
        typ = str(fld.get("Type", ""))
        elem = fld.get("Elem")
        optional = fld.get("Optional") or fld.get("Required")
        computed_only = fld.get("Computed") and not optional
        mode = str(fld.get("ConfigMode", ""))
        is_block = (
            isinstance(elem, Resource)
            and typ.endswith(("TypeList", "TypeSet"))
            and "SchemaConfigModeAttr" not in mode
            and (not computed_only or "SchemaConfigModeBlock" in mode)
        )
        if is_block:
            out["blocks"][name] = convert_sdk(elem.get("Schema", {}))
        elif computed_only:
            out["attributes"].append(name)
        else:
            out["arguments"].append(name)
    if top:
        if "id" not in schema_map:
            out["attributes"].append("id")
        if timeouts:
            tb = empty_schema()
            tb["arguments"] = sorted(timeouts)
            out["blocks"]["timeouts"] = tb
    return normalize(out)


def convert_fw(fw):
    out = empty_schema()
    for name, (kind, val) in fw.items():
        if kind == "block":
            out["blocks"][name] = convert_fw(val)
        elif val.get("Optional") or val.get("Required"):
            out["arguments"].append(name)
        else:
            out["attributes"].append(name)
    return normalize(out)


def normalize(s):
    return {
        "arguments": sorted(set(s["arguments"])),
        "attributes": sorted(set(s["attributes"]) - set(s["arguments"])),
        "blocks": {k: normalize(v) for k, v in sorted(s["blocks"].items())},
    }


# --------------------------------------------------------------------------------------------
# Finding a type's constructor
# --------------------------------------------------------------------------------------------


def provider_maps(tree: GoTree, provider_dirs):
    """{'resources': {type: (GoFile, expr)}, 'data_sources': {...}} from the provider's map literals"""
    found: dict[str, dict] = {"resources": {}, "data_sources": {}}
    for pd in provider_dirs:
        for f in tree.pkg(pd):
            toks = f.toks
            for i in range(len(toks) - 4):
                # ...map[string]*schema.Resource{ "type": expr, ... }
                if toks[i].text == "map" and toks[i + 1].text == "[" and i + 7 < len(toks) and toks[i + 7].text == "Resource" and toks[i + 8].text == "{":
                    ob = i + 8
                    cb = match_close(toks, ob)
                    # the name the map is assigned to: `var NAME = map...`, `NAME := map...`, `NAME: map...`
                    ctx = toks[i - 2].text if i >= 2 and toks[i - 1].text in ("=", ":=", ":") else ""
                    kind = "data_sources" if re.search(r"[Dd]ata[Ss]ource", ctx) else "resources"
                    for k, v in Evaluator(tree).kv(toks[ob + 1:cb]).items():
                        found[kind].setdefault(k, (f, v))
    return found


_FW_KINDS = {"resource": "resources", "datasource": "data_sources", "ephemeral": "ephemeral_resources"}


def fw_types(tree: GoTree, dirs):
    """terraform-plugin-framework types: {(kind, "_name"): (dir, file)} from each file whose
    Metadata method sets resp.TypeName = req.ProviderTypeName + "_name"; the kind comes from the
    request type of that method (resource./datasource./ephemeral.MetadataRequest)"""
    found: dict[tuple[str, str], tuple[str, str]] = {}
    for d in dirs:
        full = os.path.join(tree.root, d)
        if not os.path.isdir(full):
            continue
        for name in sorted(os.listdir(full)):
            if not name.endswith(".go") or name.endswith("_test.go"):
                continue
            path = os.path.join(full, name)
            with open(path, encoding="utf-8") as fh:
                src = fh.read()
            for m in re.finditer(r'Metadata\([^)]*\breq\s+(\w+)\.MetadataRequest[^{]*\{[^}]*?'
                                 r'resp\.TypeName\s*=\s*req\.ProviderTypeName\s*\+\s*"(_\w+)"', src):
                kind = _FW_KINDS.get(m.group(1))
                if kind:
                    found.setdefault((kind, m.group(2)), (d, name))
    return found


def extract_go(root, provider_name, types, provider_dirs, fw_dirs):
    tree = GoTree(root)
    ev = Evaluator(tree)
    maps = provider_maps(tree, provider_dirs)
    fw = None
    result = {"resources": {}, "data_sources": {}}
    missing = []
    for kind, names in types.items():
        for tname in names:
            entry = maps[kind].get(tname)
            if entry is not None:
                f, expr = entry
                tree.files_read.add(os.path.relpath(f.path, root))
                res = ev.eval(expr, f, {}, "field")
                if isinstance(res, Resource):
                    result[kind][tname] = convert_sdk(res.get("Schema", {}), top=True, timeouts=res.get("Timeouts"))
                    continue
                ev.warn(f"{tname}: constructor did not evaluate to a schema.Resource ({res!r})")
                missing.append(tname)
                continue
            # terraform-plugin-framework
            if fw is None:
                fw = fw_types(tree, fw_dirs)
            key = (kind, "_" + tname[len(provider_name):])
            if key in fw:
                d, fname = fw[key]
                gf = next(x for x in tree.pkg(d) if os.path.basename(x.path) == fname)
                tree.files_read.add(os.path.relpath(gf.path, root))
                meth = next((v for (recv, mname), v in gf.methods.items() if mname == "Schema"), None)
                if meth is not None:
                    params, body, _result = meth
                    env = {}
                    for st in split_top(body, ";"):
                        st = strip_semis(st)
                        if len(st) > 4 and st[0].text == "resp" and st[2].text == "Schema" and st[3].text == "=":
                            fwres = ev.eval(st[4:], gf, env)
                            if isinstance(fwres, FwSchema):
                                result[kind][tname] = convert_fw(fwres)
                    if tname in result[kind]:
                        continue
            missing.append(tname)
    return result, missing, tree


# --------------------------------------------------------------------------------------------
# Documentation reader (cross-check)
# --------------------------------------------------------------------------------------------

_BULLET = re.compile(r"^[*-]\s+`([A-Za-z0-9_./\[\]]+)`")
_NESTED_SCHEMA = re.compile(r"^###\s+Nested Schema for `([A-Za-z0-9_.]+)`")
_SECTION = re.compile(
    r"^(?:<a name=\"[^\"]*\"></a>)?\s*(?:The|An?)\s+(?:optional,?\s+)?(?:computed\s+)?`([A-Za-z0-9_.\[\]]+)`\s+(?:block|subblock|sublist|list)",
    re.I,
)


def parse_docs(path, type_name=None):
    """{'args': {dotted path: marker}, 'attrs': set(dotted paths)} from one documentation page."""
    with open(path, encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    region = None
    section = ""
    args, attrs = {}, set()
    for idx, line in enumerate(lines):
        m = _NESTED_SCHEMA.match(line)  # tfplugindocs pages: "### Nested Schema for `a.b`"
        if m:
            region, section = "args", m.group(1)
            continue
        if line.startswith("### ") and region is not None:  # tfplugindocs: Required / Optional / Read-Only
            h = line[4:].strip().lower()
            if h in ("required", "optional"):
                region = "args"
            elif h == "read-only":
                region = "attrs"
            continue
        if line.startswith("## "):
            h = line[3:].strip().lower()
            if h.startswith("argument") or h == "schema":
                region, section = "args", ""
            elif h.startswith("attribute"):
                region, section = "attrs", ""
            else:
                region = None
            continue
        if region is None:
            continue
        m = _SECTION.match(line.strip())
        if m:
            section = m.group(1).replace("[]", "")
            (attrs.add if region == "attrs" else lambda p: args.setdefault(p, ""))(section)
            continue
        m = _BULLET.match(line)
        if not m:
            continue
        name = m.group(1).replace("[]", "")
        rest = line[m.end():]
        for nxt in lines[idx + 1:idx + 3]:  # generated pages put "(Optional, [Beta](...))" on the next line
            if not nxt.strip() or _BULLET.match(nxt):
                break
            rest += " " + nxt.strip()
        names = [name]
        if "/" in name:  # IAM pages: `member/members`
            names = name.split("/")
            if type_name and type_name.endswith("_iam_member"):
                names = [n for n in names if not n.endswith("s")] or names
        marker = rest
        if type_name and re.search(r"only by `?google_\w+", rest):
            only = re.findall(r"only by `?(google_\w+)", rest)
            if type_name not in only:
                continue
        name_path = [re.sub(r"\.\d+\.", ".", section + "." + n if section else n).strip(".") for n in names]
        for p in name_path:
            p = re.sub(r"\.\d+(\.|$)", r"\1", p)
            if region == "args":
                args[p] = marker
            else:
                attrs.add(p)
    return {"args": args, "attrs": attrs}


def flatten(schema, prefix=""):
    out = {}
    for a in schema["arguments"]:
        out[prefix + a] = "argument"
    for a in schema["attributes"]:
        out[prefix + a] = "attribute"
    for b, sub in schema["blocks"].items():
        out[prefix + b] = "block"
        out.update(flatten(sub, prefix + b + "."))
    return out


def compare_docs(schema, docs):
    """names the docs mention that the schema lacks, and leaf names the docs never mention"""
    flat = flatten(schema)
    leaves = {p.split(".")[-1] for p in flat}
    doc_paths = set(docs["args"]) | docs["attrs"]
    doc_leaves = {part for p in doc_paths for part in p.split(".")}
    unknown = sorted(p for p in doc_paths if p not in flat and p.split(".")[-1] not in leaves)
    beta_marked = {p for p, marker in docs["args"].items() if re.search(r"\(\s*(Optional|Required)?,?\s*\[?Beta", marker)}
    beta_names = {p.split(".")[-1] for p in beta_marked}

    def is_beta(p):
        parts = p.split(".")
        return any(".".join(parts[:k]) in beta_marked or parts[k - 1] in beta_names for k in range(1, len(parts) + 1))

    beta = sorted(p for p in unknown if is_beta(p))
    undocumented = sorted(p for p, k in flat.items() if p.split(".")[-1] not in doc_leaves and p not in ("id", "timeouts") and not p.startswith("timeouts."))
    # settable in the schema but listed by the docs only among the exported attributes, and the reverse
    doc_attr_only = {p for p in docs["attrs"] if p not in docs["args"]}
    arg_but_doc_attr = sorted(p for p in doc_attr_only if flat.get(p) in ("argument", "block"))
    attr_but_doc_arg = sorted(p for p, marker in docs["args"].items()
                              if flat.get(p) == "attribute" and re.search(r"\((Optional|Required)", marker))
    return {"schema_argument_docs_attribute": arg_but_doc_attr,
            "schema_attribute_docs_optional_or_required": attr_but_doc_arg,
            "in_docs_not_in_schema": [p for p in unknown if p not in beta],
            "in_docs_beta_only": beta,
            "in_schema_not_in_docs": undocumented}


def meta_fields(root, tname):
    """field paths that the provider's own google/services/*/*_meta.yaml lists for a resource type"""
    sdir = os.path.join(root, "google", "services")
    if not os.path.isdir(sdir):
        return None, None
    for pkg in sorted(os.listdir(sdir)):
        d = os.path.join(sdir, pkg)
        if not os.path.isdir(d):
            continue
        for name in sorted(os.listdir(d)):
            if not name.endswith("_meta.yaml"):
                continue
            path = os.path.join(d, name)
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
            if re.search(r"^resource:\s*'?%s'?\s*$" % re.escape(tname), text, re.M):
                return os.path.relpath(path, root), re.findall(r"^\s*-\s*field:\s*'?([\w.]+)'?", text, re.M)
    return None, None


def check_meta(schema, fields):
    """meta.yaml paths that do not resolve in the extracted schema"""
    bad = []
    for path in fields:
        node = schema
        for i, part in enumerate(path.split(".")):
            if part in node["blocks"]:
                node = node["blocks"][part]
                continue
            if part in node["arguments"] or part in node["attributes"]:
                break  # a leaf, or a nested attribute object/map whose insides are not tabled
            bad.append(path)
            break
    return bad


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------

PROVIDERS = {
    "google": {
        "source": "hashicorp/google",
        "repository": "hashicorp/terraform-provider-google",
        "provider_dirs": ["google/provider"],
        "fw_dirs": None,  # filled from the tree: every google/services/* folder and google/fwprovider
        "docs": "website/docs",
        "prefix": "google",
    },
    "random": {
        "source": "hashicorp/random",
        "repository": "hashicorp/terraform-provider-random",
        "provider_dirs": ["internal/provider"],
        "fw_dirs": ["internal/provider"],
        "docs": "docs",
        "prefix": "random",
    },
}


def doc_path(root, cfg, kind, tname):
    short = tname[len(cfg["prefix"]) + 1:]
    sub = {"resources": ("r", "resources"), "data_sources": ("d", "data-sources")}[kind]
    cands = []
    for d in sub:
        for stem in (short, tname):
            for ext in (".html.markdown", ".md", ".html.md"):
                cands.append(os.path.join(cfg["docs"], d, stem + ext))
    if tname.endswith("_iam_member"):
        base = tname[: -len("_member")]
        for d in sub:
            for stem in (base[len(cfg["prefix"]) + 1:], base):
                cands.append(os.path.join(cfg["docs"], d, stem + ".html.markdown"))
    for c in cands:
        if os.path.isfile(os.path.join(root, c)):
            return c
    return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("provider", choices=sorted(PROVIDERS))
    ap.add_argument("--src", required=True, help="root of the provider's source tree at the wanted tag")
    ap.add_argument("--version", required=True)
    ap.add_argument("--commit", default=None, help="40-hex commit the tree was taken at")
    ap.add_argument("--resource", action="append", default=[])
    ap.add_argument("--data-source", action="append", default=[])
    ap.add_argument("--compare-docs", action="store_true", help="print where the documentation pages differ")
    ap.add_argument("-o", "--output", required=True)
    args = ap.parse_args(argv)

    cfg = PROVIDERS[args.provider]
    root = os.path.abspath(args.src)
    fw_dirs = cfg["fw_dirs"]
    if fw_dirs is None:
        fw_dirs = ["google/fwprovider"] + sorted(
            os.path.join("google/services", d) for d in os.listdir(os.path.join(root, "google/services")))
    types = {"resources": sorted(set(args.resource)), "data_sources": sorted(set(args.data_source))}
    result, missing, tree = extract_go(root, cfg["prefix"] + "_", types, cfg["provider_dirs"], fw_dirs)

    docs_used = []
    report = {}
    for kind in ("resources", "data_sources"):
        for tname in types[kind]:
            dp = doc_path(root, cfg, kind, tname)
            if dp:
                docs_used.append(dp)
            if args.compare_docs and dp and tname in result[kind]:
                report[f"{kind}/{tname}"] = compare_docs(result[kind][tname], parse_docs(os.path.join(root, dp), tname))
            if args.compare_docs and kind == "resources" and tname in result[kind]:
                mp, fields = meta_fields(root, tname)
                if mp:
                    report.setdefault(f"{kind}/{tname}", {})["meta_yaml"] = mp
                    report[f"{kind}/{tname}"]["in_meta_yaml_not_in_schema"] = check_meta(result[kind][tname], fields)

    out = {
        "provider": cfg["source"],
        "version": args.version,
        "source": {
            "repository": cfg["repository"],
            "tag": "v" + args.version,
            "commit": args.commit,
            "paths": sorted(tree.files_read),
            "docs_paths": sorted(set(docs_used)),
            "method": "deploy/schemas/terraform-providers/extract.py: the schema literals of the Go source at the tag "
                      "(settable = Optional/Required, read-only = Computed only; nested blocks as Terraform forms them), "
                      "cross-checked against docs_paths" + (" and the provider's *_meta.yaml field lists" if cfg["prefix"] == "google" else ""),
        },
        "resources": result["resources"],
        "data_sources": result["data_sources"],
    }
    with open(args.output, "w", encoding="utf-8") as fh:
        json.dump(out, fh, indent=1, sort_keys=False)
        fh.write("\n")

    for w in tree.warnings:
        print("warning:", w, file=sys.stderr)
    if args.compare_docs:
        print(json.dumps(report, indent=1))
    if missing:
        print("not found:", ", ".join(missing), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
