"""A small interpreter for the subset of Google Cloud Workflows that templates/score_workflow.yaml
uses, so tests run that definition against fake connectors and a fake clock.

Steps: assign (also to `a[expr]`, `a.b`), call (sys.sleep, subworkflows, connectors), switch
(condition + next and/or steps), for (value + in), try/except, raise, return, steps, next.
Expressions are whole `${...}` values, translated token by token to Python (true/false/null,
and/or/not/in, `a.b` as map access, double-quoted strings, only the functions of `functions()`).
Like a deployment, loading checks every jump target and every expression's syntax and function
names. Scopes follow the Workflows reference: a variable first assigned in a for loop or an
except block is gone after it; a subworkflow sees only its params. Raised error values (raise
steps, the fakes' HttpError maps, a KeyError or TypeError in an expression) are WorkflowErrors,
catchable by try/except; mistakes in the definition are DefinitionErrors.
"""
import datetime
import io
import keyword
import re
import tokenize
import urllib.parse

STEP_KEYS = {"assign", "call", "args", "result", "switch", "for", "try", "except", "raise",
             "return", "steps", "next"}
MODULES = {"text", "map", "list", "sys", "time", "json", "http"}
OPERATORS = {"+", "-", "*", "/", "//", "%", "(", ")", ",", ".", "==", "!=", "<", "<=", ">", ">=", "]"}
LIMIT = 100_000  # steps in one execution: more means an endless loop


class DefinitionError(Exception):
    """The definition uses something Workflows (or this subset of it) does not have."""


class WorkflowError(Exception):
    def __init__(self, value):
        super().__init__(value)
        self.value = value


def http_error(code, message):
    """What a connector raises for an HTTP status >= 400 (Workflows "HttpError" map)."""
    return WorkflowError({"tags": ["HttpError"], "code": code, "message": message, "body": {}})


class Clock:
    """sys.now and sys.sleep: seconds since the epoch, advanced only by sleeping."""

    def __init__(self, now):
        self.now, self.slept = now, []

    def sleep(self, seconds):
        assert isinstance(seconds, (int, float)) and 0 <= seconds <= 31536000, seconds
        self.slept.append(seconds)
        self.now += seconds


def _check(value, kind, function):
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise TypeError(f"{function}: wrong argument type {type(value).__name__}")
    return value


def functions(clock):
    """The expression helpers and standard-library functions the workflow may use."""
    return {
        "default": lambda value, fallback: fallback if value is None else value,
        "keys": lambda mapping: list(_check(mapping, dict, "keys")),
        "len": lambda value: len(_check(value, (str, list, dict), "len")),
        "string": lambda n: str(_check(n, (int, float), "string")),
        "map.get": lambda mapping, key: _check(mapping, dict, "map.get").get(key),
        "list.concat": lambda items, value: [*_check(items, list, "list.concat"), value],
        "text.substring": lambda s, start, end: _check(s, str, "text.substring")[max(start, 0):max(end, 0)],
        "text.replace_all": lambda s, old, new: _check(s, str, "text.replace_all").replace(old, new),
        # Letters, digits and .-_ stay as they are; everything else becomes %XX (also ~ and /).
        "text.url_encode": lambda s: urllib.parse.quote(_check(s, str, "url_encode"), safe="").replace("~", "%7E"),
        "text.find_all_regex": lambda s, regexp: [
            {"index": m.start(), "match": m.group(0)} for m in re.finditer(regexp, _check(s, str, "regex"))],
        "time.format": lambda seconds: datetime.datetime.fromtimestamp(
            seconds, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "sys.now": lambda: clock.now,
    }


def translate(expression):
    """The Python text of a Workflows expression (the part between ${ and })."""
    out, tokens = [], list(tokenize.generate_tokens(io.StringIO(expression).readline))
    i = 0
    while i < len(tokens):
        kind, text = tokens[i].type, tokens[i].string
        following = tokens[i + 1].string if i + 1 < len(tokens) else ""
        if kind == tokenize.NAME:
            if text in ("true", "false", "null"):
                out.append({"true": "True", "false": "False", "null": "None"}[text])
            elif text in ("and", "or", "not", "in"):
                out.append(text)
            elif keyword.iskeyword(text) or text.startswith("_"):
                raise DefinitionError(f"not Workflows syntax: {text!r} in {expression!r}")
            elif out and out[-1] == ".":  # a field of a map: a.b -> a["b"]
                out[-1] = f"[{text!r}]"
            elif text in MODULES and following == "." and i + 2 < len(tokens):
                out.append(f"__fn[{text + '.' + tokens[i + 2].string!r}]")
                i += 2
            elif text in MODULES:
                raise DefinitionError(f"module {text} used as a value in {expression!r}")
            else:
                out.append(f"__fn[{text!r}]" if following == "(" else f"__var({text!r})")
        elif kind == tokenize.STRING and text.startswith('"'):
            out.append(text)
        elif kind == tokenize.NUMBER or text in OPERATORS:
            out.append(text)
        elif text == "[" and out and out[-1][-1] in ')]"':  # indexing, never a list literal
            out.append(text)
        elif kind not in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER, tokenize.INDENT, tokenize.DEDENT):
            raise DefinitionError(f"not Workflows syntax: {text!r} in {expression!r}")
        i += 1
    return " ".join(out)


class _Jump(Exception):
    def __init__(self, target):
        self.target = target


class _Return(Exception):
    def __init__(self, value):
        self.value = value


class Execution:
    """One execution of `definition` with `connectors` {"googleapis.x.y.z": fn(**args)}."""

    def __init__(self, definition, connectors, clock):
        self.definition, self.connectors, self.clock = definition, connectors, clock
        self.functions, self.steps_run, self.calls = functions(clock), 0, []
        for workflow in definition.values():
            self.validate(workflow["steps"], [])

    def validate(self, steps, outer):
        names = [*outer, *(name for step in steps for name in step)]
        for step in steps:
            if not (isinstance(step, dict) and len(step) == 1):
                raise DefinitionError(f"a step is a map with one key: {step!r}")
            ((name, body),) = step.items()
            if not body or set(body) - STEP_KEYS:
                raise DefinitionError(f"step {name}: unknown keys {sorted(set(body or ()) - STEP_KEYS)}")
            for target in [body.get("next"), *(case.get("next") for case in body.get("switch", []))]:
                if target not in (None, "end", "break", "continue", *names):
                    raise DefinitionError(f"step {name}: no step {target!r} to jump to")
            for part in [body.get("try", {}), body.get("except", {}), body.get("for", {}),
                         *body.get("switch", [])]:
                self.validate(part.get("steps", []), names)
            self.validate(body.get("steps", []), names)
            self.evaluate(body, None)

    def run(self, argument):
        return self.subworkflow("main", [argument] if "params" in self.definition["main"] else [])

    def subworkflow(self, name, values):
        try:
            self.run_steps(self.definition[name]["steps"],
                           [dict(zip(self.definition[name].get("params", []), values))])
        except _Return as done:
            return done.value
        except _Jump:  # validated: only `next: end` gets here
            pass
        return None

    def evaluate(self, value, scopes):
        """The value with its expressions evaluated; with scopes None, only checks them."""
        if isinstance(value, dict):
            return {key: self.evaluate(item, scopes) for key, item in value.items()}
        if isinstance(value, list):
            return [self.evaluate(item, scopes) for item in value]
        if not isinstance(value, str) or "${" not in value:
            return value
        if not (value.startswith("${") and value.endswith("}")):
            raise DefinitionError(f"an expression must be the whole value: {value!r}")
        python = translate(value[2:-1])
        if scopes is None:
            compile(python, value, "eval")
            for name in re.findall(r"__fn\['([^']+)'\]", python):
                if name not in self.functions:
                    raise DefinitionError(f"unknown function {name!r} in {value!r}")
            return None

        def variable(name):
            for scope in reversed(scopes):
                if name in scope:
                    return scope[name]
            raise DefinitionError(f"variable {name!r} is not defined here: {value!r}")

        try:
            return eval(python, {"__builtins__": {}}, {"__var": variable, "__fn": self.functions})  # noqa: S307
        except (KeyError, IndexError, TypeError, ValueError, ZeroDivisionError) as err:
            tag = type(err).__name__ if isinstance(err, (KeyError, IndexError, ValueError)) else "TypeError"
            raise WorkflowError({"tags": [tag], "message": f"{err!r} in {value}"}) from err

    def assign(self, target, value, scopes):
        match = re.fullmatch(r"(\w+)((?:\.\w+|\[[^\]]+\])*)", target)
        if not match:
            raise DefinitionError(f"cannot assign to {target!r}")
        name, path = match.group(1), re.findall(r"\.(\w+)|\[([^\]]+)\]", match.group(2))
        holder = next((scope for scope in reversed(scopes) if name in scope), scopes[-1])
        keys = [name, *(field or self.evaluate("${" + index + "}", scopes) for field, index in path)]
        for key in keys[:-1]:
            holder = holder[key]
        holder[keys[-1]] = value

    def run_steps(self, steps, scopes):
        names = [next(iter(step)) for step in steps]
        i = 0
        while i < len(steps):
            try:
                target = self.run_step(names[i], steps[i][names[i]], scopes)
            except _Jump as jump:  # from nested steps to a step of this list, or further out
                if jump.target not in names:
                    raise
                target = jump.target
            if target is None:
                i += 1
            elif target in names:
                i = names.index(target)
            else:
                raise _Jump(target)

    def run_step(self, name, body, scopes):
        self.steps_run += 1
        if self.steps_run > LIMIT:
            raise DefinitionError("too many steps in one execution: an endless loop?")
        if "try" in body:
            try:
                self.run_step(name, body["try"], scopes)
            except WorkflowError as error:
                if "except" not in body:
                    raise
                handler = body["except"]
                self.run_steps(handler.get("steps", []), [*scopes, {handler["as"]: error.value}])
        for item in body.get("assign", []):
            ((target, value),) = item.items()
            self.assign(target, self.evaluate(value, scopes), scopes)
        if "call" in body:
            result = self.call(body["call"], self.evaluate(body.get("args", {}), scopes))
            if "result" in body:
                self.assign(body["result"], result, scopes)
        if "for" in body:
            self.run_for(name, body["for"], scopes)
        for case in body.get("switch", []):
            if set(case) - {"condition", "next", "steps"}:
                raise DefinitionError(f"step {name}: a switch case takes condition, next and steps")
            condition = self.evaluate(case["condition"], scopes)
            if not isinstance(condition, bool):
                raise WorkflowError({"tags": ["TypeError"], "message": f"{name}: condition is not a boolean"})
            if condition:
                self.run_steps(case.get("steps", []), scopes)
                if "next" in case:
                    return case["next"]
                break
        self.run_steps(body.get("steps", []), scopes)
        if "raise" in body:
            raise WorkflowError(self.evaluate(body["raise"], scopes))
        if "return" in body:
            raise _Return(self.evaluate(body["return"], scopes))
        return body.get("next")

    def run_for(self, name, loop, scopes):
        for value in self.evaluate(loop["in"], scopes):
            try:
                self.run_steps(loop["steps"], [*scopes, {loop["value"]: value}])
            except _Jump as jump:
                if jump.target == "break":
                    break
                if jump.target != "continue":
                    raise DefinitionError(f"{name}: cannot jump out of a for loop to {jump.target!r}") from None

    def call(self, function, args):
        self.calls.append((function, args))
        if function == "sys.sleep":
            return self.clock.sleep(**args)
        if function in self.definition and function != "main":
            params = self.definition[function].get("params", [])
            if set(args) != set(params):
                raise DefinitionError(f"{function} takes {params}, not {sorted(args)}")
            return self.subworkflow(function, [args[p] for p in params])
        if function in self.connectors:
            return self.connectors[function](**args)
        raise DefinitionError(f"no function or connector {function!r} here")
