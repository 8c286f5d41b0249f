"""Errors raised by the engines. The HTTP layer maps each to one status code."""


class EngineInputError(ValueError):
    """The caller's input is invalid (empty, wrong type, out of range)."""


class InputTooLongError(EngineInputError):
    """An input exceeds the model's token limit and the config says to reject, not truncate."""


class EngineUnavailableError(RuntimeError):
    """The vLLM engine is dead or shutting down; the request may be retried elsewhere."""


class EngineDiedError(EngineUnavailableError):
    """The vLLM engine died (its engine-core process is gone). Its replica leaves rotation at once:
    nothing it holds can answer again until Ray replaces it."""


class EngineStartupError(RuntimeError):
    """The engine could not start. The message is one line naming the model and the cause;
    the full traceback stays in the log."""

    def __init__(self, model: str, cause: str, source: str | None = None):
        where = f" ({source})" if source and source != model else ""
        super().__init__(f"model {model!r}{where} failed to start: {cause}")
        self.model = model
        self.cause = cause
