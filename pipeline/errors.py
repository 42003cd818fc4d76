"""The exception tree. Every error says what the user can do about it.

Exceptions turn into exit codes and one-line messages only in ``pipeline/cli``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class ContractsumError(Exception):
    """Root of every expected failure; ``exit_code`` is what the CLI exits with."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(ContractsumError):
    """Settings, flags or a config file are wrong: fix them and run again."""

    exit_code = 2


class ModelNotFoundError(ConfigError):
    """No model directory is configured or the path holds no checkpoint."""


class StorageError(ContractsumError):
    """The database is unreachable or in an unexpected state."""


class IngestError(ContractsumError):
    """A file cannot be turned into pages and sentences; ``reason`` is for people."""

    def __init__(self, source: str, reason: str, *, status: str = "failed") -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason
        self.status = status


class PromptError(ContractsumError):
    """A prompt template is malformed or a rendered prompt does not fit the context."""


class OutputError(ContractsumError):
    """Model output could not be parsed against the schema (kept raw for inspection)."""

    def __init__(self, message: str, *, raw: str, finish_reason: str | None = None) -> None:
        super().__init__(message)
        self.raw = raw
        self.finish_reason = finish_reason


class EngineError(ContractsumError):
    """The inference engine failed to start, died, or stalled."""


class EngineStartError(EngineError):
    """The engine never started (vLLM refused the model or the settings, no device, out of memory)."""


class EngineStalledError(EngineError):
    """The watchdog saw no progress for longer than its limit."""


def read_toml(
    path: Path, *, what: str = "config file", error: type[ContractsumError] = ConfigError, hint: str | None = None
) -> dict[str, Any]:
    """A TOML file as a dict; a missing or malformed file is ``error`` naming the file (``what``
    says which kind of file it is) and the problem."""
    import tomllib

    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist", hint=hint) from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{what} {path} is not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{what} {path} cannot be read: {exc}") from None
