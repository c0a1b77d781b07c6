"""meta/v1 Status objects, as the Kubernetes API server writes them for errors (and for a
delete that has no object to return), and the exception that carries one to the HTTP layer.
May import: the standard library and netsim.model."""

from __future__ import annotations

from netsim.model import k8s

REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
           406: "NotAcceptable", 409: "Conflict", 410: "Expired", 415: "UnsupportedMediaType", 422: "Invalid",
           500: "InternalError", 504: "Timeout"}


class StatusError(Exception):
    def __init__(self, code: int, message: str, reason: str | None = None, details: dict | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason if reason is not None else REASONS.get(code, "")
        self.details = details

    def status(self) -> dict:
        return status(self.code, self.message, self.reason, self.details)


def status(code: int, message: str, reason: str = "", details: dict | None = None, success: bool = False) -> dict:
    out = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success" if success else "Failure",
           "message": message, "reason": reason, "code": code}
    if details:
        out["details"] = details
    if success:
        out.pop("message")
        out.pop("reason")
    return out


def _details(kind: k8s.Kind, name: str | None) -> dict:
    d: dict = {"kind": kind.plural}
    if name:
        d = {"name": name, **({"group": kind.group} if kind.group else {}), "kind": kind.plural}
    elif kind.group:
        d["group"] = kind.group
    return d


def _resource(kind: k8s.Kind) -> str:
    return f"{kind.plural}.{kind.group}" if kind.group else kind.plural


def not_found(kind: k8s.Kind, name: str) -> StatusError:
    return StatusError(404, f'{_resource(kind)} "{name}" not found', "NotFound", _details(kind, name))


def already_exists(kind: k8s.Kind, name: str) -> StatusError:
    return StatusError(409, f'{_resource(kind)} "{name}" already exists', "AlreadyExists", _details(kind, name))


def conflict(kind: k8s.Kind, name: str, why: str) -> StatusError:
    return StatusError(409, f'Operation cannot be fulfilled on {_resource(kind)} "{name}": {why}', "Conflict",
                       _details(kind, name))


# A cause's reason (field.ErrorType) from the start of its message, as field.Error words it.
CAUSE_REASONS = (("Required value", "FieldValueRequired"), ("Unsupported value", "FieldValueNotSupported"),
                 ("Forbidden", "FieldValueForbidden"), ("Too long", "FieldValueTooLong"),
                 ("Duplicate value", "FieldValueDuplicate"))


def _cause_reason(message: str) -> str:
    return next((r for prefix, r in CAUSE_REASONS if message.startswith(prefix)), "FieldValueInvalid")


def invalid(kind: k8s.Kind, name: str, causes: list[tuple[str, str]], why: str | None = None) -> StatusError:
    """422 as the API server's field validation writes it: `Kind.group "name" is invalid: field: message`
    (several causes in brackets, as an aggregate error prints them)."""
    title = f'{kind.kind}{"." + kind.group if kind.group else ""} "{name}" is invalid'
    body = why or ", ".join(f"{f}: {m}" if f else m for f, m in causes)
    if not why and len(causes) > 1:
        body = f"[{body}]"
    d = {**_details(kind, name), "kind": kind.kind,
         "causes": [{"reason": _cause_reason(m), "message": m, "field": f} for f, m in causes]}
    return StatusError(422, f"{title}: {body}", "Invalid", d)


def bad_request(message: str) -> StatusError:
    return StatusError(400, message, "BadRequest")


def gone(message: str) -> StatusError:
    return StatusError(410, message, "Expired")
