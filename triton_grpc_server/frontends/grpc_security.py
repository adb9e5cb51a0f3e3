"""TLS and restricted protocols for the gRPC frontend, with Triton's flags.

* :func:`server_credentials`: ``--grpc-use-ssl`` / ``--grpc-use-ssl-mutual`` with
  ``--grpc-server-cert``, ``--grpc-server-key`` and ``--grpc-root-cert`` (PEM
  files), as ``grpc.ssl_server_credentials``; mutual TLS requires and verifies
  a client certificate signed by the root certificate.
* :func:`interceptors` / :func:`aio_interceptors`: ``--grpc-restricted-protocol``
  as a server interceptor that refuses a call of a restricted group lacking its
  header with UNAVAILABLE and Triton's text, before the handler (or the request
  deserializer) runs. No interceptor is installed when nothing is restricted.
* :func:`add_port`: binds the address with or without TLS.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import grpc

from ..restrictions import Restrictions, grpc_method_group, grpc_refusal_text


class SecurityConfigError(ValueError):
    """A TLS setting that cannot work (start-up reports it and exits)."""


def _read_pem(path, flag: str) -> bytes:
    if not path:
        raise SecurityConfigError(f"{flag} must be given with --grpc-use-ssl")
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SecurityConfigError(f"unable to read {flag} '{path}': {exc.strerror}") from None


def server_credentials(settings) -> Optional[grpc.ServerCredentials]:
    """The TLS credentials the settings ask for, or None for plaintext."""
    mutual = bool(getattr(settings, "grpc_use_ssl_mutual", False))
    if not (mutual or getattr(settings, "grpc_use_ssl", False)):
        return None
    cert = _read_pem(settings.grpc_server_cert, "--grpc-server-cert")
    key = _read_pem(settings.grpc_server_key, "--grpc-server-key")
    root = None
    if settings.grpc_root_cert or mutual:
        root = _read_pem(settings.grpc_root_cert, "--grpc-root-cert")
    try:
        return grpc.ssl_server_credentials([(key, cert)], root_certificates=root,
                                           require_client_auth=mutual)
    except (ValueError, TypeError) as exc:
        raise SecurityConfigError(f"invalid TLS settings: {exc}") from None


def add_port(server, address: str, settings) -> int:
    """Bind ``address`` on ``server`` (``grpc.Server`` or ``grpc.aio.Server``); the port or 0."""
    credentials = server_credentials(settings)
    if credentials is None:
        return server.add_insecure_port(address)
    return server.add_secure_port(address, credentials)


def restrictions_of(settings) -> Restrictions:
    return Restrictions.for_grpc(getattr(settings, "grpc_restricted_protocol", None) or [])


def _refusing_handler(handler: grpc.RpcMethodHandler, text: str, aio: bool):
    """A handler of the same shape as ``handler`` that only refuses the call."""
    code = grpc.StatusCode.UNAVAILABLE
    if aio:
        async def refuse(request, context):
            await context.abort(code, text)
    else:
        def refuse(request, context):
            context.abort(code, text)
    # No deserializer: the refused request is never parsed.
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse)
    return grpc.unary_unary_rpc_method_handler(refuse)


def _refusal(restrictions: Restrictions, details) -> Optional[str]:
    group = grpc_method_group(details.method)
    if group is None or group not in restrictions.rules:
        return None
    header = restrictions.refusal(group, dict(details.invocation_metadata or ()))
    return grpc_refusal_text(header) if header is not None else None


class RestrictedProtocolInterceptor(grpc.ServerInterceptor):
    """``grpc.server``: refuse restricted calls that lack their header."""

    def __init__(self, restrictions: Restrictions):
        self.restrictions = restrictions

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        text = _refusal(self.restrictions, handler_call_details) if handler is not None else None
        return handler if text is None else _refusing_handler(handler, text, aio=False)


class AioRestrictedProtocolInterceptor(grpc.aio.ServerInterceptor):
    """``grpc.aio.server``: refuse restricted calls that lack their header."""

    def __init__(self, restrictions: Restrictions):
        self.restrictions = restrictions

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        text = _refusal(self.restrictions, handler_call_details) if handler is not None else None
        return handler if text is None else _refusing_handler(handler, text, aio=True)


def interceptors(settings) -> list:
    restrictions = restrictions_of(settings)
    return [RestrictedProtocolInterceptor(restrictions)] if restrictions else []


def aio_interceptors(settings) -> list:
    restrictions = restrictions_of(settings)
    return [AioRestrictedProtocolInterceptor(restrictions)] if restrictions else []
