"""A project with code but no endpoints."""


def hello() -> str:
    return "hello"
