"""Every limit the server enforces, in one place: defaults, flags, meaning.

Each field of ``Limits`` is also a server flag of the same name (``--<field>``);
``define_flags`` declares them from the fields, so the defaults below are the
flags' defaults. A request over a limit is refused before its data is
allocated, with the code named in the field's help. The fixed limits below
have no flag; ``hybrid_tfrs.serving.ECHO_LIMIT`` (200) caps the user input an
error message repeats.
"""

import dataclasses

from absl import flags

MIB = 2**20
MAX_RANK = 32  # dimensions of a request tensor (gRPC) or nesting of JSON lists (REST)
MESSAGE_LIMIT = 1000  # characters of an error message sent back


def _limit(default, help_text, kind=int):
    return dataclasses.field(default=kind(default), metadata={"help": help_text})


@dataclasses.dataclass(frozen=True)
class Limits:
    """Size, time and queue limits of the server (see each field's help)."""

    grpc_max_message_bytes: int = _limit(
        16 * MIB, "Largest gRPC request or response message (RESOURCE_EXHAUSTED beyond)."
    )
    rest_max_body_bytes: int = _limit(
        16 * MIB, "Largest REST request body, by its Content-Length (413 beyond, body unread)."
    )
    max_rows_per_request: int = _limit(
        1024, "Most rows (histories, examples) in one request (INVALID_ARGUMENT beyond)."
    )
    max_tensor_elements: int = _limit(
        2**20,
        "Most values one input tensor may declare; checked on the declared shape "
        "before decoding (INVALID_ARGUMENT beyond).",
    )
    max_concurrent_requests: int = _limit(
        16, "Predictions running at once; others wait in the queue."
    )
    max_queued_requests: int = _limit(
        64,
        "Predictions waiting for a slot; one more is refused at once "
        "(RESOURCE_EXHAUSTED / 429) instead of growing the queue.",
    )
    request_timeout_seconds: float = _limit(
        30,
        "Longest a prediction waits for a slot or for its batch (DEADLINE_EXCEEDED / 504 beyond).",
        float,
    )
    rest_read_timeout_seconds: float = _limit(
        10,
        "Longest wait for the next bytes of a REST request (headers or body) or of an idle "
        "keep-alive connection; a stalled request is answered 408 and closed.",
        float,
    )
    grpc_max_threads: int = _limit(
        16, "gRPC worker threads; at most max_queued_requests more RPCs wait for one."
    )

    def __post_init__(self):
        for field in dataclasses.fields(self):
            if getattr(self, field.name) <= 0:
                raise ValueError(f"--{field.name} must be > 0, got {getattr(self, field.name)}")

    @classmethod
    def from_flags(cls, flag_values=flags.FLAGS):
        """The limits of the parsed ``--<field>`` flags."""
        return cls(
            **{field.name: flag_values[field.name].value for field in dataclasses.fields(cls)}
        )


def define_flags(flag_values=flags.FLAGS):
    """Declares one flag per ``Limits`` field, with the field's default and help."""
    for field in dataclasses.fields(Limits):
        define = flags.DEFINE_float if field.type in (float, "float") else flags.DEFINE_integer
        define(field.name, field.default, field.metadata["help"], flag_values=flag_values)
