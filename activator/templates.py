"""Templates in `exec` and `environment`: `$(sockets.NAME)`, `$(instance)`, `$(env.VAR)`.

`$(...)` is a template and `$$` a literal `$`; any other `$` is literal, so `sh -c 'echo $HOME'`
reaches the shell untouched. `$(circus.sockets.NAME)` and `$(circus.wid)` are aliases, so Circus
command lines move over unchanged. Templates are parsed when unit files are loaded (an unknown
one is a load-time error) and expanded when a process starts, to the fd number *the service*
sees (3 + the socket's position), never activator's own.
"""

from __future__ import annotations

from activator.record import Record



class TemplateError(ValueError):
    pass


class Ref(Record):
    kind: str  # "socket", "instance" or "env"
    name: str = ""

    def __str__(self) -> str:
        return {"socket": f"$(sockets.{self.name})", "instance": "$(instance)",
                "env": f"$(env.{self.name})"}[self.kind]


class Template(Record):
    parts: tuple  # str and Ref, in order

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Asked for by every check of every unit: computed once, kept beside the fields.
        self.__dict__["refs"] = tuple([p for p in self.parts if type(p) is Ref])

    def expand(self, socket_fds: dict, instance: int, environ) -> str:
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
            elif part.kind == "socket":
                out.append(str(socket_fds[part.name]))
            elif part.kind == "instance":
                out.append(str(instance))
            else:
                out.append(environ.get(part.name, ""))
        return "".join(out)

    def __str__(self) -> str:
        return "".join(p.replace("$", "$$") if isinstance(p, str) else str(p) for p in self.parts)


def _ref(body: str) -> Ref:
    if body in ("instance", "circus.wid"):
        return Ref("instance")
    for prefix in ("sockets.", "circus.sockets."):
        if body.startswith(prefix):
            name = body[len(prefix):]
            if not name:
                break
            return Ref("socket", name)
    if body.startswith("env."):
        name = body[4:]
        if not (name.isascii() and name.isidentifier()):  # [A-Za-z_][A-Za-z0-9_]*
            raise TemplateError(f"'$({body})': '{name}' is not a valid environment variable name")
        return Ref("env", name)
    raise TemplateError(
        f"unknown template '$({body})'; known: $(sockets.NAME), $(instance), $(env.VAR), "
        "$(circus.sockets.NAME), $(circus.wid), and $$ for a literal $")


def parse(text: str) -> Template:
    if "$" not in text:  # most arguments: nothing to look for
        return Template((text,) if text else ())
    parts: list = []
    literal: list[str] = []
    i = 0
    while True:
        j = text.find("$", i)
        if j < 0:
            literal.append(text[i:])
            break
        literal.append(text[i:j])
        following = text[j + 1:j + 2]
        if following == "$":
            literal.append("$")
            i = j + 2
        elif following == "(":
            end = text.find(")", j + 2)
            if end < 0:
                raise TemplateError(f"'$(' without its closing ')' in '{text}' (write $$ for a literal $)")
            if literal:
                parts.append("".join(literal))
                literal = []
            parts.append(_ref(text[j + 2:end]))
            i = end + 1
        else:
            literal.append("$")
            i = j + 1
    if any(literal):
        parts.append("".join(literal))
    return Template(tuple(p for p in parts if p != ""))


def literal(text: str) -> Template:
    """A template that expands to `text` as given (the arguments after `-- CMD`)."""
    return Template((text,) if text else ())
