"""Outgoing HTTP for EventPulse Python plugins: one blocking request
through wasi:http's outgoing handler (the host lets it out only to
destinations the manifest grants). Used by ``Context.http``."""

from urllib.parse import urlsplit

from componentize_py_types import Err, Ok
from wit_world.imports import outgoing_handler, streams
from wit_world.imports import wasi_http_types as h

_METHODS = {
    "GET": h.Method_Get(),
    "HEAD": h.Method_Head(),
    "POST": h.Method_Post(),
    "PUT": h.Method_Put(),
    "DELETE": h.Method_Delete(),
    "PATCH": h.Method_Patch(),
    "OPTIONS": h.Method_Options(),
}

# wasi:io writes at most 4096 bytes per blocking call.
_CHUNK = 4096


def send(method, url, headers, body):
    """Send and read the whole response: ``(status, headers, body)``."""
    from eventpulse_plugin import Error

    parts = urlsplit(url)
    fields = h.Fields.from_list([(k, v.encode()) for k, v in headers])
    request = h.OutgoingRequest(fields)
    request.set_method(_METHODS.get(method.upper(), h.Method_Other(method)))
    request.set_scheme(h.Scheme_Https() if parts.scheme == "https" else h.Scheme_Http())
    request.set_authority(parts.netloc)
    request.set_path_with_query((parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
    outgoing = request.body()
    try:
        future = outgoing_handler.handle(request, None)
    except Err as e:
        raise Error(f"{method} {parts.scheme}://{parts.netloc}: {e.value}")
    with outgoing.write() as stream:
        for i in range(0, len(body), _CHUNK):
            stream.blocking_write_and_flush(body[i : i + _CHUNK])
    h.OutgoingBody.finish(outgoing, None)

    with future.subscribe() as ready:
        ready.block()
    got = future.get()
    if isinstance(got, Err) or got is None:
        raise Error(f"{method} {parts.scheme}://{parts.netloc}: no response", retryable=True)
    inner = got.value if isinstance(got, Ok) else got
    if isinstance(inner, Err):
        raise Error(f"{method} {parts.scheme}://{parts.netloc}: {inner.value}", retryable=True)
    response = inner.value if isinstance(inner, Ok) else inner
    status = response.status()
    got_headers = [(k, v.decode("latin-1")) for k, v in response.headers().entries()]
    incoming = response.consume()
    data = b""
    with incoming.stream() as stream:
        while True:
            try:
                data += stream.blocking_read(65536)
            except Err as e:
                if isinstance(e.value, streams.StreamError_Closed):
                    break
                raise Error(f"reading the response: {e.value}", retryable=True)
    return status, got_headers, data
