"""Domain errors of the service, each mapped to one HTTP status and a problem+json body.

    ServiceError (500)
     ├── BadRequest (400)
     ├── Unauthorized (401)
     ├── Forbidden (403)
     ├── NotFound (404)
     ├── Conflict (409)
     ├── PayloadTooLarge (413)
     └── Unprocessable (422)
"""

from __future__ import annotations


class ServiceError(Exception):
    status = 500
    type = "about:blank"
    title = "Internal error"

    def __init__(self, detail: str, *, type: str | None = None, **extra):
        super().__init__(detail)
        self.detail = detail
        if type:
            self.type = type
        self.extra = extra

    def problem(self) -> dict:
        return {"type": self.type, "title": self.title, "status": self.status, "detail": self.detail, **self.extra}


class BadRequest(ServiceError):
    status, title = 400, "Bad request"


class Unauthorized(ServiceError):
    status, title = 401, "Unauthorized"


class Forbidden(ServiceError):
    status, title = 403, "Forbidden"


class NotFound(ServiceError):
    status, title = 404, "Not found"


class Conflict(ServiceError):
    status, title = 409, "Conflict"


class PayloadTooLarge(ServiceError):
    status, title = 413, "Payload too large"


class Unprocessable(ServiceError):
    status, title = 422, "Unprocessable content"
