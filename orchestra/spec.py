"""Pydantic models at the boundary: models, agents, refiners, budgets and pools.

A :class:`Pool` is what a user defines, in Python or in YAML (``agents/<name>.yaml``): the models
that can be called (litellm ids with prices), the agents that wrap them (system prompts, tools),
a refiner that merges a round's outputs, a default budget and a default policy.

Everything here is validated when it is built; a mistake raises :class:`~orchestra.errors.UserError`
before any model is called.
"""

from __future__ import annotations

import importlib
import inspect
import math
import os
import re
import string
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from orchestra.errors import UserError

__all__ = [
    "TEMPLATE_FIELDS",
    "AgentSpec",
    "Budget",
    "Example",
    "ModelSpec",
    "Pool",
    "RefinerSpec",
    "ToolSpec",
    "UnsafeToolWarning",
    "format_validation_error",
]

#: Placeholders a system-prompt template may use.
TEMPLATE_FIELDS = frozenset({"query", "notes", "context", "agent", "model", "date"})

# Environment variables that hold each hosted provider's key (litellm's conventions).
_PROVIDER_KEYS: dict[str, tuple[str, ...]] = {
    "openai": ("OPENAI_API_KEY",),
    "anthropic": ("ANTHROPIC_API_KEY",),
    "gemini": ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
    "mistral": ("MISTRAL_API_KEY",),
    "groq": ("GROQ_API_KEY",),
    "together_ai": ("TOGETHERAI_API_KEY", "TOGETHER_API_KEY"),
    "deepseek": ("DEEPSEEK_API_KEY",),
    "openrouter": ("OPENROUTER_API_KEY",),
    "cohere": ("COHERE_API_KEY",),
    "fireworks_ai": ("FIREWORKS_API_KEY", "FIREWORKS_AI_API_KEY"),
}
# Providers that never need a key: in-process or served by the user.
_KEYLESS_PROVIDERS = frozenset({"local", "replay", "test", "ollama", "ollama_chat", "hosted_vllm", "vllm"})


def format_validation_error(err: ValidationError, source: str) -> str:
    """Turn a pydantic error into one readable line per problem, naming where it is.

    A nested model's own error (a :class:`UserError` raised while validating a field) is
    flattened into this one's lines, its field paths joined to the outer one, so a message never
    reads "invalid Pool: Pool: … invalid ModelSpec: …"."""
    lines = []
    for loc, msg in _problems(err):
        lines.append(f"{source}: field {loc!r}: {msg}" if loc else f"{source}: {msg}")
    return "\n".join(lines)


_NESTED_LINE = re.compile(r"^\w+: (?:field '([^']*)': )?(.*)$")
_NESTED_ONE = re.compile(r"^invalid [A-Z]\w*: (?:field '([^']*)': )?(.*)$")


def _problems(err: ValidationError) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        cause = (e.get("ctx") or {}).get("error")
        if isinstance(cause, UserError):
            text = str(cause)
            lines = text.splitlines()
            one = _NESTED_ONE.match(text) if len(lines) == 1 else None
            if len(lines) > 1 and lines[0].startswith("invalid ") and lines[0].endswith(":"):
                nested = [_NESTED_LINE.match(ln) for ln in lines[1:]]
            elif one is not None:
                nested = [one]
            else:
                out.append((loc, " ".join(text.split())))
                continue
            for m, ln in zip(nested, lines[1:] or lines, strict=True):
                inner, msg = (m.group(1) or "", m.group(2)) if m else ("", ln)
                out.append((".".join(x for x in (loc, inner) if x), msg))
            continue
        msg = str(e["msg"]).removeprefix("Value error, ")
        got = e.get("input")
        if got is not None and not isinstance(got, dict) and e["type"] != "value_error":
            got_r = repr(got)  # a hostile file's value can be huge: quote only its start
            msg += f" (got {got_r if len(got_r) <= 80 else got_r[:79] + '…'})"
        out.append((loc, msg))
    return out


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def __init__(self, **data: Any) -> None:
        # Direct construction in Python gets the same readable UserError as a YAML file.
        try:
            super().__init__(**data)
        except ValidationError as e:
            name = type(self).__name__
            problems = format_validation_error(e, name)
            if "\n" in problems:
                raise UserError(f"invalid {name}:\n{problems}") from None
            raise UserError(f"invalid {name}: {problems.removeprefix(name + ': ')}") from None


class ModelSpec(_Strict):
    """A model that agents can run on.

    Args:
        name: the short name used in the pool, in policies and traces (defaults to ``id``).
        id: the litellm model id, e.g. ``openai/gpt-4o-mini`` or ``local/smollm2-135m-instruct``.
        input_price: USD per 1M input tokens. ``None`` takes litellm's cost map (filled in when
            the pool is run: :func:`orchestra.backends.priced.priced_pool`).
        output_price: USD per 1M output tokens. ``None`` takes litellm's cost map.
        context_window: prompt + output tokens the model accepts.
        max_output_tokens: the most tokens one call may generate (also what the budget reserves).
        description: prose that policies can read (strengths, size, style).
        tags: free labels policies can filter on (``cheap``, ``code``, ``chat``...).
        quality: optional prior quality in [0, 1] that simple policies (strongest, ensemble) use.
        mode: ``chat`` for instruction-tuned models, ``completion`` for base models.
        api_base: endpoint for self-served models (vLLM, Ollama...).
        api_key_env: environment variable holding the key, when not litellm's default.
        params: extra keyword arguments passed to litellm (temperature, top_p...).
        timeout_s: per-call timeout.
    """

    name: str = ""
    id: str
    input_price: float | None = Field(default=None, ge=0)
    output_price: float | None = Field(default=None, ge=0)
    context_window: int = Field(default=8192, gt=0)
    max_output_tokens: int = Field(default=512, gt=0)
    description: str = ""
    tags: tuple[str, ...] = ()
    quality: float | None = Field(default=None, ge=0, le=1)
    mode: Literal["chat", "completion"] = "chat"
    api_base: str | None = None
    api_key_env: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float = Field(default=120.0, gt=0)

    @model_validator(mode="after")
    def _defaults(self) -> ModelSpec:
        if not self.id.strip():
            raise ValueError("model id must not be empty")
        if not self.name:
            object.__setattr__(self, "name", self.id)
        if self.max_output_tokens >= self.context_window:
            raise ValueError(
                f"max_output_tokens ({self.max_output_tokens}) must be below "
                f"context_window ({self.context_window})"
            )
        return self

    @property
    def provider(self) -> str:
        """The litellm provider prefix (``openai`` for ``openai/gpt-4o``), or ``""``."""
        return self.id.split("/", 1)[0] if "/" in self.id else ""

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """USD for a call with these token counts (prices must be set)."""
        assert self.input_price is not None and self.output_price is not None
        return (input_tokens * self.input_price + output_tokens * self.output_price) / 1e6

    def missing_key(self) -> str | None:
        """The environment variable this hosted model needs but that is unset, if any."""
        if self.api_key_env:
            return None if os.environ.get(self.api_key_env) else self.api_key_env
        provider = self.provider or ("openai" if self.id.startswith(("gpt-", "o1", "o3")) else "")
        if provider in _KEYLESS_PROVIDERS or self.api_base:
            return None
        if provider.startswith("claude") or self.id.startswith("claude"):
            provider = "anthropic"
        names = _PROVIDER_KEYS.get(provider)
        if not names:
            return None
        return None if any(os.environ.get(n) for n in names) else names[0]


class UnsafeToolWarning(UserWarning):
    """A pool opted in to a tool that can run shell commands, code or touch the process."""


# Modules whose callables let a tool's caller (model output) run commands or code, read or write
# any file, or end the process. Matched on the resolved object's module (and the module of what
# it wraps), so ``os:system`` (really ``posix.system``), ``os.path:exists`` (``posixpath``) and
# a re-export like ``mytools:run = os.system`` are all caught.
_UNSAFE_MODULES = frozenset({
    "os", "posix", "nt", "posixpath", "ntpath", "genericpath", "subprocess", "_posixsubprocess",
    "_winapi", "asyncio.subprocess", "builtins", "io", "_io", "shutil", "sys", "importlib",
    "_imp", "pty", "runpy", "code", "codeop", "ctypes", "_ctypes", "multiprocessing",
    "_multiprocessing", "pickle", "_pickle", "marshal", "signal", "_signal",
})


_UNSAFE_WARNED: dict[Any, Any] = {}  # the warnings registry of allowed unsafe tools


def _unsafe_module(name: object) -> str | None:
    if not isinstance(name, str):
        return None
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in _UNSAFE_MODULES:
            return name
    return None


def _builtin_ids() -> dict[int, str]:
    import builtins

    return {id(v): k for k, v in vars(builtins).items() if callable(v)}


def unsafe_reason(obj: Any, path: str | None = None) -> str | None:
    """Why calling ``obj`` with model-chosen arguments is unsafe (None when nothing is known).

    Looks at the object itself, not the import path alone: its identity among the builtins
    (``eval``, ``exec``, ``compile``, ``__import__``, ``open``, ...), its module, and the same for
    what it wraps (``functools.partial``, ``functools.wraps``, bound methods).
    """
    if path is not None and ":" in path:
        mod = _unsafe_module(path.split(":", 1)[0])
        if mod is not None:
            return f"it comes from module {mod!r}"
    builtin_ids = _builtin_ids()
    seen: set[int] = set()
    todo = [obj]
    while todo:
        o = todo.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        if id(o) in builtin_ids:
            return f"it is the builtin {builtin_ids[id(o)]!r}"
        if inspect.ismodule(o):
            mod = _unsafe_module(o.__name__)
        else:
            mod = _unsafe_module(getattr(o, "__module__", None))
            if mod is None and not (inspect.isroutine(o) or inspect.isclass(o)):
                # A callable instance: the class that defines its __call__.
                mod = _unsafe_module(getattr(type(o), "__module__", None))
                if mod == "functools":
                    mod = None
        if mod is not None:
            return f"it comes from module {mod!r}"
        for attr in ("func", "__wrapped__", "__func__", "__self__"):
            inner = getattr(o, attr, None)
            if inner is not None and (callable(inner) or inspect.ismodule(inner)):
                todo.append(inner)
    return None


class ToolSpec(_Strict):
    """A Python callable an agent may call, described by a JSON schema.

    The pool checks every tool when it is validated: the import path must resolve to a callable,
    and a callable that can run shell commands or code, touch any file or end the process
    (anything from ``os``, ``subprocess``, ``builtins``, ``shutil``, ``sys``, ``importlib``,
    ``pty``, ..., ``eval``/``exec``-like builtins, or a wrapper of one) is refused unless the
    tool sets ``allow_unsafe`` or the pool sets ``allow_unsafe_tools``.

    Args:
        name: the tool's name as the model sees it.
        description: what it does, for the model.
        parameters: JSON schema of its keyword arguments.
        function: ``"package.module:attr"`` import path of the callable (or the callable itself).
        allow_unsafe: run it although it is unsafe (model output chooses its arguments); a
            warning is still given.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    function: str | Callable[..., Any]
    allow_unsafe: bool = False

    def resolve(self) -> Callable[..., Any]:
        """Import and return the callable.

        Raises:
            UserError: when the import path is malformed or does not resolve.
        """
        if callable(self.function):
            return self.function
        path = self.function
        if ":" not in path:
            raise UserError(
                f"tool {self.name!r}: expected function as 'module:attr' (got {path!r}); "
                "write it like 'mypkg.tools:add'"
            )
        module, attr = path.split(":", 1)
        try:
            obj: Any = importlib.import_module(module)
        except Exception as e:  # ImportError, or whatever the module raises while importing
            raise UserError(
                f"tool {self.name!r}: cannot import module {module!r} of {path!r} "
                f"({type(e).__name__}: {e}); install it or put it on PYTHONPATH (run from the "
                "folder that holds it), or fix the 'function' path"
            ) from e
        try:
            for part in attr.split("."):
                obj = getattr(obj, part)
        except AttributeError as e:
            raise UserError(
                f"tool {self.name!r}: module {module!r} has no {attr!r} (from {path!r}); "
                "fix the name after ':' in 'function'"
            ) from e
        if not callable(obj):
            raise UserError(
                f"tool {self.name!r}: {path!r} is a {type(obj).__name__}, not a function; "
                "point 'function' at a callable"
            )
        return obj  # type: ignore[no-any-return]

    def check(self, *, pool_allows_unsafe: bool = False, where: str = "") -> str | None:
        """Resolve the callable now and refuse an unsafe one that nothing opted in to.

        Returns:
            None for a safe tool; for an unsafe one that is allowed, the one-line warning to give.

        Raises:
            UserError: when the callable does not resolve, or is unsafe and not allowed.
        """
        fn = self.resolve()
        path = self.function if isinstance(self.function, str) else None
        why = unsafe_reason(fn, path)
        if why is None:
            return None
        shown = path or getattr(fn, "__qualname__", None) or repr(fn)
        if not (self.allow_unsafe or pool_allows_unsafe):
            raise UserError(
                f"{where}tool {self.name!r} ({shown}) is unsafe: {why}, so model output could "
                "run commands or code, or touch files, with it. Use a function of your own that "
                "does only what the tool needs, or opt in with 'allow_unsafe: true' on the tool "
                "or 'allow_unsafe_tools: true' on the pool"
            )
        return (f"{where}unsafe tool {self.name!r} ({shown}) allowed: {why}; model output "
                "chooses its arguments")

    def openai_schema(self) -> dict[str, Any]:
        """The tool in the OpenAI function-calling format litellm accepts."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


class Example(_Strict):
    """A few-shot example: an input and the output the agent should give."""

    input: str
    output: str


class AgentSpec(_Strict):
    """An agent: a role with a system prompt, the models it may run on, and tools.

    Args:
        name: unique within the pool.
        description: prose that policies read to decide when to use it.
        system_prompt: a template; placeholders from :data:`TEMPLATE_FIELDS`
            (``{query}``, ``{notes}``, ``{context}``, ``{agent}``, ``{model}``, ``{date}``).
        models: names of the pool's models this agent may run on (empty: all).
        tools: callables the agent may call.
        examples: few-shot examples, sent as earlier turns (chat) or Q/A text (completion).
        role: ``answer`` for agents that answer the query, ``verify`` for judges of answers,
            ``refine`` for agents that merge answers.
    """

    name: str
    description: str = ""
    system_prompt: str = "You are a helpful assistant. Answer concisely and correctly."
    models: tuple[str, ...] = ()
    tools: tuple[ToolSpec, ...] = ()
    examples: tuple[Example, ...] = ()
    role: Literal["answer", "verify", "refine"] = "answer"

    @field_validator("system_prompt")
    @classmethod
    def _check_template(cls, v: str) -> str:
        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(v) if f is not None}
        except ValueError as e:
            raise ValueError(f"system_prompt is not a valid template: {e}") from e
        unknown = sorted(f for f in fields if f not in TEMPLATE_FIELDS)
        if unknown:
            raise ValueError(
                f"unknown placeholder(s) {unknown} in system_prompt; allowed: "
                f"{sorted(TEMPLATE_FIELDS)} (write literal braces as '{{{{' and '}}}}')"
            )
        return v

    def render_system(self, **values: str) -> str:
        """Fill the system-prompt template."""
        return self.system_prompt.format_map({k: values.get(k, "") for k in TEMPLATE_FIELDS})


class RefinerSpec(_Strict):
    """How a round's outputs are merged into one answer.

    ``llm``: the ``agent`` (a refine-role agent) on ``model`` synthesises the outputs and says where
    they conflict; a round with one output passes it through without a call.
    ``vote``: majority over extracted short answers (choice letters, numbers, short text).
    ``last``: the last output as is.
    """

    kind: Literal["llm", "vote", "last"] = "llm"
    agent: str | None = None
    model: str | None = None
    max_output_tokens: int | None = Field(default=None, gt=0)


_EXAMPLE_LIMIT = {"usd": "0.01", "tokens": "100000", "calls": "20", "rounds": "4",
                  "seconds": "60"}


class Budget(_Strict):
    """Hard limits for one run. ``None`` means no limit on that dimension.

    Args:
        usd: dollars.
        tokens: input + output tokens.
        calls: model calls (the refiner's included).
        rounds: route → dispatch → refine rounds.
        seconds: wall-clock seconds.
    """

    usd: float | None = None
    tokens: int | None = None
    calls: int | None = None
    rounds: int | None = None
    seconds: float | None = None

    @model_validator(mode="after")
    def _positive(self) -> Budget:
        for name in ("usd", "tokens", "calls", "rounds", "seconds"):
            v = getattr(self, name)
            if isinstance(v, float) and math.isinf(v):
                raise ValueError(
                    f"budget {name} must be a finite number (got {v!r}); give a value such as "
                    f"{_EXAMPLE_LIMIT[name]}, or leave it unset for no limit"
                )
            if v is not None and not v > 0:
                raise ValueError(
                    f"budget {name} must be positive (got {v!r}); "
                    f"give a value above 0 or leave it unset for no limit"
                )
        return self

    def merged(self, **override: float | None) -> Budget:
        """A copy with the given non-None limits replaced."""
        return self.model_copy(update={k: v for k, v in override.items() if v is not None})


class Pool(_Strict):
    """Agents, models, a refiner, a default budget and a default policy.

    Build one in Python or load one with :meth:`Pool.load` (a name under ``agents/`` or a path).
    Validation imports every agent's tools (see :class:`ToolSpec`); ``allow_unsafe_tools`` lets
    all of them be unsafe callables (each still warned about).
    """

    name: str = "pool"
    description: str = ""
    models: tuple[ModelSpec, ...]
    agents: tuple[AgentSpec, ...]
    refiner: RefinerSpec = RefinerSpec()
    budget: Budget = Budget(usd=1.0, rounds=4)
    policy: str = "cheapest"
    default_agent: str | None = None
    allow_unsafe_tools: bool = False
    source: str | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _cross_check(self) -> Pool:
        if not self.models:
            raise ValueError("a pool needs at least one model")
        if not self.agents:
            raise ValueError("a pool needs at least one agent")
        names = [m.name for m in self.models]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate model names {dup}; give each model a unique 'name'")
        agent_names = [a.name for a in self.agents]
        dup = sorted({n for n in agent_names if agent_names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate agent names {dup}")
        for a in self.agents:
            for m in a.models:
                if m not in names:
                    raise ValueError(
                        f"agent {a.name!r} lists unknown model {m!r}; known models: {names}"
                    )
        if self.default_agent is not None and self.default_agent not in agent_names:
            raise ValueError(
                f"default_agent {self.default_agent!r} is not an agent; known: {agent_names}"
            )
        r = self.refiner
        if r.agent is not None and r.agent not in agent_names:
            raise ValueError(f"refiner agent {r.agent!r} is not an agent; known: {agent_names}")
        if r.model is not None and r.model not in names:
            raise ValueError(f"refiner model {r.model!r} is not a model; known: {names}")
        if r.kind == "llm" and r.agent is None and not any(a.role == "refine" for a in self.agents):
            raise ValueError(
                "refiner kind 'llm' needs an agent with role 'refine' (or set refiner.agent), "
                "or use refiner kind 'vote' / 'last'"
            )
        if not any(a.role == "answer" for a in self.agents):
            raise ValueError("a pool needs at least one agent with role 'answer'")
        self._check_tools()
        return self

    def _check_tools(self) -> None:
        # Imports every tool now, so a bad path or an unsafe callable fails before any call.
        for a in self.agents:
            tool_names = [t.name for t in a.tools]
            dup = sorted({n for n in tool_names if tool_names.count(n) > 1})
            if dup:
                raise ValueError(f"agent {a.name!r} has duplicate tool names {dup}")
            for t in a.tools:
                warning = t.check(pool_allows_unsafe=self.allow_unsafe_tools,
                                  where=f"pool {self.name!r}, agent {a.name!r}: ")
                if warning is not None:
                    # One line (no source line under it), once per process and message.
                    warnings.warn_explicit(warning, UnsafeToolWarning, self.source or "<pool>", 0,
                                           module="orchestra.spec", registry=_UNSAFE_WARNED)

    # ----------------------------------------------------------------------------- lookup
    def model(self, name: str) -> ModelSpec:
        """The model called ``name`` (or whose litellm id is ``name``)."""
        for m in self.models:
            if m.name == name:
                return m
        for m in self.models:
            if m.id == name:
                return m
        raise UserError(
            f"unknown model {name!r} in pool {self.name!r}; known models: "
            f"{[m.name for m in self.models]}"
        )

    def agent(self, name: str) -> AgentSpec:
        """The agent called ``name``."""
        for a in self.agents:
            if a.name == name:
                return a
        raise UserError(
            f"unknown agent {name!r} in pool {self.name!r}; known agents: "
            f"{[a.name for a in self.agents]}"
        )

    def models_for(self, agent: str | AgentSpec) -> list[ModelSpec]:
        """The models an agent may run on, in pool order."""
        a = self.agent(agent) if isinstance(agent, str) else agent
        return [m for m in self.models if not a.models or m.name in a.models]

    @property
    def answer_agent(self) -> AgentSpec:
        """The agent used when a policy names none: ``default_agent`` or the first answerer."""
        if self.default_agent:
            return self.agent(self.default_agent)
        return next(a for a in self.agents if a.role == "answer")

    def agents_with_role(self, role: str) -> list[AgentSpec]:
        return [a for a in self.agents if a.role == role]

    def refiner_agent(self) -> AgentSpec | None:
        if self.refiner.kind != "llm":
            return None
        if self.refiner.agent:
            return self.agent(self.refiner.agent)
        return self.agents_with_role("refine")[0]

    # ----------------------------------------------------------------------------- checks
    def check_keys(self, models: list[str] | None = None) -> None:
        """Raise a UserError when a hosted model's API key is missing.

        Args:
            models: only check these model names (default: all).
        """
        missing = []
        for m in self.models:
            if models is not None and m.name not in models:
                continue
            key = m.missing_key()
            if key:
                missing.append((m.name, key))
        if missing:
            desc = ", ".join(f"{name!r} needs {key}" for name, key in missing)
            raise UserError(
                f"missing API key for pool {self.name!r}: {desc}. Export the variable(s) "
                "(e.g. `export OPENAI_API_KEY=...`) or choose a pool that runs locally "
                "(`--pool local`)."
            )

    # ----------------------------------------------------------------------------- loading
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "<dict>") -> Pool:
        """Validate a pool from plain data, with errors naming ``source`` and the field."""
        if not isinstance(data, Mapping):
            raise UserError(f"{source}: expected a mapping at the top level (got {type(data).__name__})")
        try:
            return cls.model_validate({**data, "source": source})
        except ValidationError as e:
            problems = format_validation_error(e, source)
            raise UserError(  # one problem, one line
                "invalid pool:" + ("\n" if "\n" in problems else " ") + problems
            ) from None
        except UserError as e:
            raise UserError(f"{source}: {e}") from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> Pool:
        """Load a pool from a YAML file."""
        from orchestra._yaml import read_yaml_file

        p = Path(path)
        data = read_yaml_file(p, "pool file")  # aliases bounded, duplicate keys refused
        return cls.from_dict(data or {}, source=str(p))

    @classmethod
    def load(cls, name_or_path: str | Path) -> Pool:
        """Load a pool by name (``agents/<name>.yaml``) or by path.

        Names are searched in ``$ORCHESTRA_AGENTS_DIR`` (if set), ``./agents``, the checkout's
        ``agents/`` (a source or editable install) and the copy shipped inside the package.
        """
        from orchestra._paths import find_named_file, named_files

        s = str(name_or_path)
        if s.endswith((".yaml", ".yml")) or os.sep in s or Path(s).exists():
            return cls.from_yaml(s)
        found = find_named_file("agents", s)
        if found is None:
            raise UserError(
                f"unknown pool {s!r}; known pools: {sorted(named_files('agents'))} "
                "(or give a path to a YAML file)"
            )
        return cls.from_yaml(found)

    def to_yaml(self) -> str:
        """The pool as YAML (tool callables given as import paths only)."""
        data = self.model_dump(mode="json", exclude_defaults=True)
        return yaml.safe_dump(data, sort_keys=False)
