"""Slug rules: pgflow.is_valid_slug, the 47-character flow slug cap, slugs derived from names."""

from __future__ import annotations

import pytest

from pgflow_kombu.errors import FlowDefinitionError, PgFlowError
from pgflow_kombu.flows import (
    MAX_FLOW_SLUG_LENGTH,
    is_valid_flow_slug,
    is_valid_slug,
    slug_from_name,
    validate_flow_slug,
    validate_step_slug,
)


@pytest.mark.parametrize(
    "slug",
    ["a", "_", "_private", "send_email", "Step2", "A" * 128, "runner", "run_", "_run"],
)
def test_valid_slugs(slug: str) -> None:
    assert is_valid_slug(slug)
    assert validate_step_slug(slug) == slug


@pytest.mark.parametrize(
    "slug",
    ["", "run", "1abc", "with-dash", "with space", "dot.ted", "ünïcode", "a" * 129, "a/b", None, 5],
)
def test_invalid_slugs(slug: object) -> None:
    assert not is_valid_slug(slug)
    with pytest.raises(FlowDefinitionError):
        validate_step_slug(slug)


def test_flow_slug_is_capped_by_the_queue_name_length() -> None:
    assert is_valid_flow_slug("a" * MAX_FLOW_SLUG_LENGTH)
    assert not is_valid_flow_slug("a" * (MAX_FLOW_SLUG_LENGTH + 1))
    assert is_valid_slug("a" * (MAX_FLOW_SLUG_LENGTH + 1))  # fine as a step slug
    with pytest.raises(FlowDefinitionError, match=r"at most 47 are allowed.*pgmq queue"):
        validate_flow_slug("a" * 48)


def test_error_messages_say_what_is_wrong() -> None:
    with pytest.raises(FlowDefinitionError, match=r"'run'.*reserved"):
        validate_flow_slug("run")
    with pytest.raises(FlowDefinitionError, match="must not be empty"):
        validate_flow_slug("")
    with pytest.raises(FlowDefinitionError, match="letters, digits and underscores"):
        validate_step_slug("bad-slug", flow_slug="orders")
    with pytest.raises(FlowDefinitionError, match="in flow 'orders'") as info:
        validate_step_slug("bad-slug", flow_slug="orders")
    assert info.value.flow_slug == "orders"
    assert info.value.step_slug == "bad-slug"
    assert isinstance(info.value, PgFlowError)


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("send_email", "send_email"),
        ("myapp.tasks.send_email", "myapp_tasks_send_email"),
        ("<lambda>", "_lambda_"),
        ("2fa_check", "_2fa_check"),
        ("run", "run_"),
        ("Outer.<locals>.inner", "Outer_locals_inner"),
        ("kebab-case-name", "kebab_case_name"),
    ],
)
def test_slug_from_name(name: str, slug: str) -> None:
    assert slug_from_name(name) == slug
    assert is_valid_flow_slug(slug)


def test_slug_from_long_name_is_stable_unique_and_short() -> None:
    a = slug_from_name("package.module." + "x" * 60 + ".alpha")
    b = slug_from_name("package.module." + "x" * 60 + ".beta")
    assert a != b
    assert len(a) == len(b) == MAX_FLOW_SLUG_LENGTH
    assert is_valid_flow_slug(a)
    assert a == slug_from_name("package.module." + "x" * 60 + ".alpha")
    assert len(slug_from_name("y" * 200, max_length=128)) == 128


def test_slug_from_empty_name_is_an_error() -> None:
    with pytest.raises(FlowDefinitionError):
        slug_from_name("")
