"""A tiny module the example notebook imports, to show local edits reaching the pod."""


def greet(name: str) -> str:
    """Return a greeting for name."""
    return f"Hello, {name}, from the notebook pod!"
