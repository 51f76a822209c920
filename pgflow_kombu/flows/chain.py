"""Chaining tasks into flows, with Celery's meaning.

::

    etl = chain("etl", extract, transform, load)        # load(transform(extract(**input)))
    etl = (extract >> transform >> load).to_flow("etl")  # the same
    report = (fetch >> [by_region, by_product] >> merge).to_flow("report")
    thumbs = (list_images >> resize.map() >> publish).to_flow("thumbs")

How a chain becomes pgflow steps:

* Every member is one step whose slug is the task's name; a task used again gets ``_2``,
  ``_3``... in order of appearance (``.s(...).set(slug="x")`` chooses one).
* The first member gets the run input as its keyword arguments (like ``task.delay``).
  Every later member depends on its predecessor and gets its output as first argument.
* ``[b, c]`` is a fan-out: each branch (a task or a sub-chain) depends on the predecessor. The
  step after it depends on every branch's last step and gets the list of their outputs, in the
  order written (a chord body). A branch that ends in a fan-out contributes a nested list.
* ``b.map()`` (or ``each(b)``) is a map step over the predecessor's output, which must be an
  array: one task per element, each gets the element as first argument; the next member gets
  the list of results. At the start of a chain it maps over the run input (an array).
* ``b.s(x, y=1)`` adds arguments after the piped-in value: ``b(prev, x, y=1)``.
* A task's options become its step's options; ``chain(...)``'s options are the flow's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeAlias

from typing_extensions import Unpack

from pgflow_kombu.errors import FlowDefinitionError
from pgflow_kombu.flows import keywords
from pgflow_kombu.flows.binding import (
    Binder,
    ElementBinder,
    KwargsBinder,
    PipeBinder,
    ResultSpec,
)
from pgflow_kombu.flows.flow import Flow
from pgflow_kombu.flows.handler import Handler
from pgflow_kombu.flows.options import StepOptions
from pgflow_kombu.flows.slugs import validate_step_slug

if TYPE_CHECKING:
    from pgflow_kombu.flows.task import Task

__all__ = ["Chain", "ChainItem", "Group", "Signature", "chain", "each"]

ChainItem: TypeAlias = "Task[..., Any] | Signature | Chain | Sequence[Any]"
"""What can be chained: a task, a signature, a chain, or a list of those (a fan-out).

Lists are typed loosely (``Sequence[Any]``) because a literal mixing tasks and signatures would
otherwise be inferred as ``list[object]``; their items are checked when the chain is built."""


@dataclass(frozen=True)
class Signature:
    """A task as a chain member: extra arguments, map or not, slug and option overrides."""

    task: Task[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    is_map: bool = False
    slug: str | None = None
    options: StepOptions = field(default_factory=StepOptions)

    def set(
        self, *, slug: str | None = None, **options: Unpack[keywords.StepOptionKeywords]
    ) -> Signature:
        """A copy with this step slug and/or step options (over the task's own)."""
        keywords.check_keywords(options, keywords.StepOptionKeywords, "set()")
        overrides = keywords.step_options_of(options)
        merged = StepOptions(**{**self.options.as_dict(), **overrides.as_dict()})
        new_slug = validate_step_slug(slug) if slug is not None else self.slug
        return replace(self, slug=new_slug, options=merged)

    def map(self) -> Signature:
        """This member as a map step (one task per element of its predecessor's output)."""
        return replace(self, is_map=True)

    def __rshift__(self, other: ChainItem) -> Chain:
        return Chain.of(self) >> other

    def __rrshift__(self, other: ChainItem) -> Chain:
        return Chain.of(other) >> self


@dataclass(frozen=True)
class Group:
    """A fan-out: branches that all follow the same predecessor."""

    branches: tuple[Chain, ...]


Stage: TypeAlias = "Signature | Group"


@dataclass(frozen=True)
class Chain:
    """A sequence of members (signatures and fan-outs); :meth:`to_flow` makes it a flow."""

    stages: tuple[Stage, ...]

    @classmethod
    def of(cls, item: ChainItem) -> Chain:
        """The chain made of one item (a list is a fan-out; a chain is itself)."""
        if isinstance(item, Chain):
            return item
        if isinstance(item, Signature):
            return cls((item,))
        if isinstance(item, (list, tuple)):
            if not item:
                raise FlowDefinitionError("a fan-out needs at least one branch, got []")
            return cls((Group(tuple(cls.of(branch) for branch in item)),))
        from pgflow_kombu.flows.task import Task

        if isinstance(item, Task):
            return cls((Signature(item),))
        raise FlowDefinitionError(
            f"cannot chain {item!r}: expected a task, a signature (task.s()/task.map()), a chain "
            "or a list of those"
        )

    def __rshift__(self, other: ChainItem) -> Chain:
        return Chain(self.stages + Chain.of(other).stages)

    def __rrshift__(self, other: ChainItem) -> Chain:
        return Chain(Chain.of(other).stages + self.stages)

    def to_flow(self, slug: str, **options: Unpack[keywords.FlowKeywords]) -> Flow:
        """Compile the chain into a new :class:`Flow` named ``slug`` (see the module doc)."""
        flow = Flow(slug, **options)
        _compile(flow, self.stages, None)
        head = self.stages[0] if self.stages else None
        if isinstance(head, Signature) and not head.is_map and not head.args and not head.kwargs:
            # delay(*args, **kwargs) on the flow binds like the head task's own delay.
            flow._input_builder = head.task.build_input
        return flow


def chain(slug: str, *items: ChainItem, **options: Unpack[keywords.FlowKeywords]) -> Flow:
    """A flow named ``slug`` running ``items`` one after another (each gets the previous output).

    ``chain("etl", a, b, c)`` is ``(a >> b >> c).to_flow("etl")``; items may be tasks,
    signatures, chains and lists (fan-outs).
    """
    if not items:
        raise FlowDefinitionError(f"chain {slug!r} needs at least one task")
    combined = Chain(())
    for item in items:
        combined = combined >> item
    return combined.to_flow(slug, **options)


def each(item: Task[..., Any] | Signature) -> Signature:
    """The map form of a chain member: ``a >> each(b)`` runs ``b`` once per element."""
    sig = item if isinstance(item, Signature) else Signature(item)
    return sig.map()


def _compile(flow: Flow, stages: Sequence[Stage], incoming: ResultSpec | None) -> ResultSpec | None:
    spec = incoming
    for stage in stages:
        if isinstance(stage, Group):
            spec = [_branch(flow, branch, spec) for branch in stage.branches]
        else:
            spec = _add(flow, stage, spec)
    return spec


def _branch(flow: Flow, branch: Chain, incoming: ResultSpec | None) -> ResultSpec:
    result = _compile(flow, branch.stages, incoming)
    assert result is not None  # a branch has at least one stage
    return result


def _flatten(spec: ResultSpec | None) -> list[str]:
    if spec is None:
        return []
    if isinstance(spec, str):
        return [spec]
    out: list[str] = []
    for s in spec:
        out.extend(d for d in _flatten(s) if d not in out)
    return out


def _unique_slug(flow: Flow, sig: Signature) -> str:
    if sig.slug is not None:
        return sig.slug  # add_step reports a duplicate
    base = sig.task.name
    if base not in flow:
        return base
    n = 2
    while f"{base}_{n}" in flow:
        n += 1
    return f"{base}_{n}"


def _add(flow: Flow, sig: Signature, incoming: ResultSpec | None) -> str:
    slug = _unique_slug(flow, sig)
    handler = Handler(sig.task.fn, flow_slug=flow.slug, step_slug=slug)
    binder: Binder
    if sig.is_map:
        if isinstance(incoming, list):
            raise FlowDefinitionError(
                f"flow {flow.slug!r} step {slug!r}: a map step needs one array to map over, but "
                "it follows a fan-out; add a step that combines the branches first",
                flow_slug=flow.slug,
                step_slug=slug,
            )
        binder = ElementBinder(sig.args, dict(sig.kwargs))
        _check_fits(flow, slug, handler, 1, sig)
    elif incoming is None:
        binder = KwargsBinder(handler.input_signature, sig.args, dict(sig.kwargs))
        _check_fits(flow, slug, handler, 0, sig)
    else:
        binder = PipeBinder(incoming, sig.args, dict(sig.kwargs))
        _check_fits(flow, slug, handler, 1, sig)
    options: dict[str, Any] = {**sig.task.options.as_dict(), **sig.options.as_dict()}
    limits = sig.task.flow.limits  # a task's limits become its step's (priority is a flow's)
    if limits.active:
        options.update(
            max_concurrency=limits.max_concurrency,
            rate_limit=limits.rate_limit,
            concurrency_key=limits.concurrency_key,
        )
    flow.add_step(
        slug,
        handler,
        depends_on=_flatten(incoming),
        step_type="map" if sig.is_map else "single",
        binder=binder,
        **options,
    )
    return slug


def _check_fits(flow: Flow, slug: str, handler: Handler, piped: int, sig: Signature) -> None:
    """Fail at definition time when the task cannot take the piped value plus ``.s()`` args."""
    placeholders = (object(),) * piped
    try:
        handler.input_signature.bind_partial(*placeholders, *sig.args, **sig.kwargs)
        if piped:
            # The piped value and extras must leave no required parameter unfilled.
            handler.input_signature.bind(*placeholders, *sig.args, **sig.kwargs)
    except TypeError as exc:
        what = "the previous step's output" if piped else "the run input's arguments"
        extra = (
            f" plus arguments {sig.args!r} {dict(sig.kwargs)!r}" if sig.args or sig.kwargs else ""
        )
        raise FlowDefinitionError(
            f"flow {flow.slug!r} step {slug!r}: {handler.name}() cannot take {what}{extra}: {exc}",
            flow_slug=flow.slug,
            step_slug=slug,
        ) from exc
