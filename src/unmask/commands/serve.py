"""``unmask serve``: the HTTP API (OpenAI-compatible completions and chat, infill, forms,
edit).

Binds 127.0.0.1 unless ``--host`` says otherwise; ``--api-key`` (or the
``UNMASK_API_KEY`` environment variable, which keeps the key out of ``ps``) turns on
Bearer authentication. Every request is logged on one line to stderr (``--quiet``: not).
See docs/serving.md.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib.util
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from unmask.commands import (
    add_dtype_flag,
    add_model_flag,
    add_quantize_flag,
    add_runtime_flags,
    check_model_exists,
    check_template_given,
    finite_float,
    registry_choice,
    template_name_or_path,
)
from unmask.commands.sample_options import (
    DRAFT_FIELDS,
    add_draft_flag,
    check_draft_flags,
    load_draft,
)
from unmask.config import DECODE_COMPILES, DRAFT_CACHES, PREDRAFTS, InfillOptions
from unmask.errors import UserError
from unmask.messages import finite, plural, shown_number

if TYPE_CHECKING:
    from unmask.server.limits import ServerLimits

LOOPBACK = ("127.0.0.1", "::1", "localhost")

SERVE_HINT = "bash install.sh (or pip install -e '.[serve]') in the unmask clone"
"""How to install what serving needs, as printed: both work from a clone of the repository."""

LIMIT_FLAGS = {"max_batch": "max_batch", "max_queue": "max_queue",
               "request_timeout_s": "timeout", "max_steps": "max_steps",
               "batch_wait_s": "batch_wait", "max_search_calls": "max_search_calls",
               "keepalive_s": "keepalive", "max_slow_checks": "max_slow_checks"}
"""The ``ServerLimits`` fields the flags set: field -> the flag's ``args`` name (``--no-regex``
sets ``allow_regex``, the one more)."""


ABANDONED = False
"""True once the server stopped with a slow check still running (``ServerState.checking``):
its thread runs on to its end, which the interpreter's shutdown would wait for, so the
command line exits with ``os._exit`` (``unmask.cli.ABANDONING``)."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a checkpoint over HTTP (OpenAI-compatible API)",
        description=(
            "Serve a checkpoint over HTTP: /v1/completions and /v1/chat/completions in "
            "OpenAI's shapes (streamed with stream: true; stream_denoising streams every "
            "denoising step), /v1/infill (with gap constraints), /v1/forms, /v1/edit, "
            "/v1/tokenize, /v1/models, /healthz, /metrics and a playground at /. Concurrent "
            "compatible requests share forward passes. One access-log line per request goes "
            "to stderr. With --draft a diffusion checkpoint drafts for a causal --model "
            "(speculative decoding; greedy output equals the causal model's own)."
        ),
    )
    add_model_flag(p)
    p.add_argument("--host", default="127.0.0.1", metavar="ADDRESS",
                   help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, metavar="N", help="TCP port (default: 8000)")
    p.add_argument("--api-key", default=None, metavar="KEY",
                   help="require 'Authorization: Bearer KEY' (default: $UNMASK_API_KEY, else none)")
    p.add_argument("--model-name", default=None, metavar="NAME",
                   help="model id in the API (default: the run directory's name)")
    p.add_argument("--chat-template", default=None, metavar="FILE|NAME",
                   type=template_name_or_path,
                   help="chat template for /v1/chat/completions: plain, default, a Jinja or JSON "
                        "file, or Jinja text (default: the checkpoint's own; without one, chat "
                        "requests are refused)")
    p.add_argument("--max-batch", type=int, default=8, metavar="N",
                   help="most rows in one forward batch (default: 8)")
    p.add_argument("--max-queue", type=int, default=64, metavar="N",
                   help="most queued requests before 429 (default: 64)")
    p.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                   help="per-request time limit (default: 300)")
    p.add_argument("--max-steps", type=int, default=1024, metavar="N",
                   help="most denoising steps per request (default: 1024)")
    p.add_argument("--batch-wait", type=float, default=0.0, metavar="SECONDS",
                   help="time the idle worker waits for more requests before a batch, at most: "
                        "it starts once --max-batch rows wait; less than --timeout (default: 0, "
                        "greedy)")
    p.add_argument("--keepalive", type=float, default=15.0, metavar="SECONDS",  # as ServerLimits
                   help="a stream silent this long sends an SSE comment (': keep-alive'), so a "
                        "proxy's read timeout does not cut it (default: 15; 0: never)")
    searches = InfillOptions.max_search_calls
    p.add_argument("--max-search-calls", type=int, default=searches, metavar="N",
                   help="most model calls the length search of one /v1/infill template may "
                        "make; a template that needs more is refused (400) before any work "
                        f"(default: {searches}; 0: no limit)")
    p.add_argument("--max-slow-checks", type=int, default=2, metavar="N",  # as ServerLimits
                   help="requests whose checks may take seconds (a structured answer's compile, "
                        "an /v1/edit regex search) checked at once, of each kind, on threads of "
                        "their own; more wait (default: 2; at most 1024)")  # state.MAX_SLOW_CHECKS
    p.add_argument("--no-regex", action="store_true",
                   help="refuse regex constraints from clients (/v1/edit, /v1/infill, /v1/forms)")
    p.add_argument("--quiet", action="store_true",
                   help="no access log (one line per request on stderr)")
    add_draft_flag(p)
    p.add_argument("--draft-length", type=int, default=None, metavar="N",
                   help="tokens drafted per round: with --draft (default: 8), or the first N "
                        "of a hybrid checkpoint's draft block (default: all of it)")
    p.add_argument("--draft-threshold", type=finite_float, default=None, metavar="X",
                   help="with --draft: end a draft before a token the drafter gives a "
                        "probability below X (adaptive length; default: 0, off)")
    p.add_argument("--draft-steps", type=int, default=None, metavar="N",
                   help="with --draft: denoising steps per draft (default: 1)")
    p.add_argument("--compile", default=None, metavar="NAME",
                   type=registry_choice("compile", DECODE_COMPILES),
                   help="torch.compile the model for decoding, once, for every request: "
                        f"{', '.join(DECODE_COMPILES)} (default: off; on a CPU the compile "
                        "takes minutes, docs/sampling.md)")
    p.add_argument("--draft-cache", default=None, metavar="NAME",
                   type=registry_choice("draft cache", DRAFT_CACHES),
                   help="with --draft: the drafter's prefix cache, prefix or none "
                        "(default: prefix)")
    p.add_argument("--predraft", default=None, metavar="NAME",
                   type=registry_choice("predraft", PREDRAFTS),
                   help="a hybrid checkpoint: pre-draft a block for every acceptance length "
                        "(all, TiDAR) or for none and all accepted only (ends: fewer positions "
                        "per forward); default: all")
    add_runtime_flags(p)
    add_dtype_flag(p)
    add_quantize_flag(p)
    p.set_defaults(func=run, check_flags=check_flags)


def configure_access_log(quiet: bool) -> None:
    """Print the server's access log (``unmask.server.access``) to stderr, one line per
    request with its time, unless ``quiet``. Replaces the handler an earlier call added."""
    logger = logging.getLogger("unmask.server.access")
    for h in [h for h in logger.handlers if getattr(h, "unmask_serve", False)]:
        logger.removeHandler(h)
    if quiet:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    handler.unmask_serve = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host``:``port`` (as uvicorn binds it), not yet listening, or a
    one-line ``UserError`` (uvicorn logs its own line and exits 1). Bound before the model
    loads, so a port in use or a wrong ``--host`` fails at once, not after minutes of loading;
    until ``listen`` a client is refused, not kept waiting. (``SO_REUSEADDR``, which lets a
    restarted server bind past connections in TIME_WAIT, also lets another socket bind the
    port until one listens: two servers started on one port both bind, and ``listen`` refuses
    the later one.)"""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # an IPv6 address
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            why = f"port {port} is in use (another server?): stop it, or choose another --port"
        elif e.errno == errno.EACCES:
            why = f"no permission to listen on port {port}: choose another --port (above 1023)"
        elif e.errno == errno.EADDRNOTAVAIL:
            why = f"{host} is not an address of this machine: check --host"
        elif isinstance(e, socket.gaierror):
            why = f"--host {host!r} is not an address or a name this machine can resolve"
        else:
            why = f"cannot listen on {host}:{port} ({e.strerror or e})"
        raise UserError(why) from None
    sock.set_inheritable(True)
    return sock


def base_url(host: str, port: int) -> str:
    """The server's URL as a browser or curl takes it: an IPv6 address in brackets
    (``http://[::1]:8000``; ``http://::1:8000`` is not a URL)."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def listen(sock: socket.socket) -> socket.socket:
    """``sock`` listening: connections wait in the backlog from the banner on (uvicorn's
    size); a one-line ``UserError`` where another server took the port meanwhile (it bound it
    too, ``bind_socket``, and listened first)."""
    try:
        sock.listen(2048)
    except OSError as e:
        port = sock.getsockname()[1]
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise UserError(f"port {port} is in use: another server started listening on it "
                            "while the model loaded; stop it, or choose another --port") from None
        raise UserError(f"cannot listen on port {port} ({e.strerror or e})") from None
    return sock


def listen_socket(host: str, port: int) -> socket.socket:
    """``bind_socket`` and ``listen`` at once: a socket uvicorn can serve on."""
    return listen(bind_socket(host, port))


@contextlib.contextmanager
def flags_named() -> Iterator[None]:
    """A ``UserError`` raised inside, as the flags spell it: ``unmask.chat``'s ``--template``
    is ``--chat-template`` here (a refusal that opens with a field the user set by its flag,
    ``predraft applies to ...``, is named by ``unmask.cli.as_typed`` for every command)."""
    try:
        yield
    except UserError as e:
        raise UserError(str(e).replace("--template", "--chat-template")) from None


def _server_class(base: type) -> type:
    """uvicorn's ``Server`` whose second SIGINT/SIGTERM exits at once, in one line: uvicorn's
    own force-quit cancelled the requests' tasks with a traceback each and left the decoding
    thread inside a torch call, which aborted the process (SIGABRT) at exit. The first one,
    with requests in flight, says that the server waits for them (it said nothing: a Ctrl-C
    looked ignored for as long as they ran, up to ``--timeout``)."""

    class Server(base):  # type: ignore[misc, valid-type]
        def handle_exit(self, sig: int, frame: Any) -> None:
            if sig not in (signal.SIGINT, signal.SIGTERM):
                super().handle_exit(sig, frame)
                return
            if self.should_exit:
                what = "interrupted" if sig == signal.SIGINT else "terminated"
                _say(f"unmask serve: {what} (second signal: requests in flight are dropped)")
                os._exit(128 + sig)
            super().handle_exit(sig, frame)  # the shutdown starts before anything is said
            # uvicorn's own bookkeeping; a version without it prints nothing here
            # rather than failing inside the signal handler
            busy = len(getattr(getattr(self, "server_state", None), "tasks", ()))
            if busy:
                again = "Ctrl-C" if sig == signal.SIGINT else "signal"
                _say(f"unmask serve: stopping once the {plural(busy, 'request')} in flight "
                     f"{'end' if busy > 1 else 'ends'} (a second {again} drops "
                     f"{'them' if busy > 1 else 'it'})")

    return Server


def _say(line: str) -> None:
    """Write ``line`` to stderr from a signal handler, never raising: a stderr closed
    (``2>&-``: ``sys.stderr`` is None, and fd 2 may be another file by now, so nothing is
    written), gone (a closed pipe) or busy (the access log writing to it: the text layer
    raises ``RuntimeError``, a reentrant call) raised inside the handler, and the shutdown
    never started (a request in flight got a 500, exit 1). Written to the stream's file
    descriptor at once (``os.write``, no lock) where it has one."""
    stream = sys.stderr
    if stream is None:
        return
    with contextlib.suppress(Exception):
        try:
            fd = stream.fileno()
        except (AttributeError, OSError, ValueError):  # (a stream in memory: a test's)
            stream.write(line + "\n")
            stream.flush()
        else:
            os.write(fd, (line + "\n").encode())


@contextlib.contextmanager
def _hangup_shuts_down(server: Any) -> Iterator[None]:
    """SIGHUP (the terminal or ssh session closed) shuts the server down as SIGTERM does,
    exit 143 (uvicorn handles only SIGINT and SIGTERM, and re-raises the one it got once
    the server is down)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def as_sigterm(sig: int, frame: Any) -> None:
        server.handle_exit(signal.SIGTERM, frame)

    old = signal.signal(signal.SIGHUP, as_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGHUP, old)


def check_flags(args: argparse.Namespace) -> None:
    """Refuse, without importing torch (the command line runs it before torch loads: such a
    typo took seconds), a server without FastAPI or uvicorn installed, then the flags that
    are wrong whatever the model: ``--port`` out of range, an empty ``--host``, a limit that
    is no positive number, ``--draft-*`` without ``--draft``, ``ServerLimits``' own rules
    (``server_limits``: ``--batch-wait`` less than ``--timeout``, ``--max-slow-checks`` at
    most 1024; it imports neither torch nor FastAPI), an API key no client could send
    (``check_api_key``), a ``--model`` or ``--draft`` that names nothing
    (``check_model_exists``; they waited for torch, the draft for the model too), and a
    ``--chat-template`` that cannot be read or rendered (``check_template_given``). A port in
    use follows in ``run``."""
    for name in ("fastapi", "uvicorn"):  # found, not imported (``run`` imports them)
        if importlib.util.find_spec(name) is None:
            raise not_installed(name)
    if not 0 < args.port < 65536:
        raise UserError(f"--port must be in 1..65535, got {args.port}")
    if not args.host.strip():  # --host "$HOST" of an unset HOST bound every interface (0.0.0.0)
        raise UserError("--host is empty (an unset variable?): give an address, 127.0.0.1 for "
                        "this machine only or 0.0.0.0 for every interface")
    for flag, value in (("--max-batch", args.max_batch), ("--max-queue", args.max_queue),
                        ("--max-steps", args.max_steps), ("--timeout", args.timeout),
                        ("--max-slow-checks", args.max_slow_checks)):
        if not (finite(value) and value > 0):  # (nan > 0 is False: said here too)
            raise UserError(f"{flag} must be a finite number > 0, got {shown_number(value)}")
    if args.max_search_calls < 0:
        raise UserError(f"--max-search-calls must be 0 (no limit) or positive, got "
                        f"{args.max_search_calls}")
    for flag, value in (("--batch-wait", args.batch_wait), ("--keepalive", args.keepalive)):
        if not (finite(value) and value >= 0):
            raise UserError(f"{flag} must be a finite number of seconds >= 0, got {value:g}")
    check_draft_flags(args)
    server_limits(args)  # (its rules across flags: they waited for torch)
    # an empty --api-key (or UNMASK_API_KEY set empty: --api-key "$KEY" of an unset KEY) is a
    # mistake, not "no key": it served every client without authentication, silently
    api_key = given_api_key(args)
    if api_key is not None:
        from unmask.server.limits import check_api_key

        check_api_key(api_key)
    check_model_exists(args)  # a --model, then a --draft, that names nothing (as loading says)
    if args.chat_template is not None:  # one that cannot be read or rendered, as chat's
        with flags_named():
            check_template_given(argparse.Namespace(template=args.chat_template))


def given_api_key(args: argparse.Namespace) -> str | None:
    """The API key the server requires: ``--api-key``, else ``$UNMASK_API_KEY``, else None."""
    return args.api_key if args.api_key is not None else os.environ.get("UNMASK_API_KEY")


def not_installed(name: str) -> UserError:
    """The refusal of a server without ``name`` (FastAPI or uvicorn) installed."""
    return UserError(f"serving needs FastAPI and uvicorn ({name} is missing): {SERVE_HINT}")


def run(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ModuleNotFoundError as e:
        raise not_installed(str(e.name)) from None
    check_flags(args)  # for a caller of run() itself; the command line checked before torch
    limits = server_limits(args)
    from unmask.infill.automaton import automaton_memory_limit, cache_limit_bytes

    cache_limit_bytes()  # a bad UNMASK_CACHE_MAX_MB now, not in every guided request's 400
    automaton_memory_limit()  # and a bad UNMASK_MAX_AUTOMATON_MB
    draft_options = {f: getattr(args, f) for f in DRAFT_FIELDS if getattr(args, f) is not None}
    if draft_options:  # refused now, in one line, as SampleConfig refuses them
        from unmask.config import SampleConfig

        with flags_named():
            SampleConfig(**draft_options)
    api_key = given_api_key(args)  # (checked by check_flags)
    sock = bind_socket(args.host, args.port)  # before the model loads: the port is ours
    try:
        return _serve(args, sock, api_key, limits, draft_options)
    except BaseException:  # not served (a bad model, template, drafter), or interrupted
        sock.close()  # (which uvicorn's shutdown has done already: closing twice is harmless)
        raise


def server_limits(args: argparse.Namespace) -> ServerLimits:
    """The ``ServerLimits`` the flags give, before the model loads; a limit they refuse
    names its flag (``--max-slow-checks must be at most 1024 ..., got 1025``)."""
    from unmask.server.limits import LimitError, ServerLimits

    try:
        return ServerLimits(allow_regex=not args.no_regex,
                            **{f: getattr(args, name) for f, name in LIMIT_FLAGS.items()})
    except LimitError as e:
        def flag(field: str) -> str:
            return "--" + LIMIT_FLAGS[field].replace("_", "-")

        raise UserError(f"{flag(e.field)} {e.naming(flag)}, got {shown_number(e.value)}"
                        ) from None


def server_config(app: Any, host: str, port: int, limits: ServerLimits) -> Any:
    """uvicorn's ``Config`` for ``app``. Its graceful shutdown (the first SIGINT or SIGTERM)
    waits for the requests in flight at most as long as they may run (``--timeout``, a
    stream's last send ``SEND_GRACE_S`` more, a second to spare): past that, only a connection
    whose client reads nothing is left, its unsent bytes never flushed, and uvicorn waited
    for it to close for ever (the server never stopped)."""
    import uvicorn

    from unmask.server.streaming import SEND_GRACE_S

    return uvicorn.Config(app, host=host, port=port, log_level="warning",
                          timeout_graceful_shutdown=limits.request_timeout_s + SEND_GRACE_S + 1)


def _serve(args: argparse.Namespace, sock: socket.socket, api_key: str | None,
           limits: ServerLimits, draft_options: dict[str, Any]) -> int:
    """Load the model, build the app and serve it on ``sock`` (bound) until shut down."""
    import uvicorn

    from unmask import api
    from unmask.config import resolve_device
    from unmask.server import create_app

    if args.host not in LOOPBACK and not api_key:
        print(f"unmask serve: warning: listening on {args.host} without --api-key; anyone who "
              "can reach this port can use the model", file=sys.stderr)
    device = str(resolve_device(args.device))
    loaded = api.load_for_decoding(args.model, device=device, dtype=args.dtype,
                                    quantize=args.quantize)
    draft = load_draft(args.draft, device, args.dtype)
    if args.compile is not None:  # every request runs the model compiled once here
        from unmask.parallel import compile_for_decoding

        compile_for_decoding(loaded.model, args.compile)  # refuses a mode it cannot run
        draft_options["compile"] = args.compile
    if args.predraft is not None:  # the hybrid decoder's layout, for every request
        draft_options["predraft"] = args.predraft
    with flags_named():
        app = create_app(loaded, api_key=api_key, limits=limits, model_name=args.model_name,
                         chat_template=args.chat_template, access_log=not args.quiet,
                         draft=draft, draft_options=draft_options)
    configure_access_log(args.quiet)
    listen(sock)
    print(f"unmask serve: {args.model} ({api.weights_dtype(loaded)} weights) on "
          f"{base_url(args.host, args.port)} (playground at /)", file=sys.stderr)
    server = _server_class(uvicorn.Server)(server_config(app, args.host, args.port, limits))
    try:
        with _hangup_shuts_down(server):
            server.run(sockets=[sock])  # (closed by uvicorn when it shuts down)
    finally:  # (a SIGTERM's Terminated is raised in it, once the server is down)
        if app.state.server.checking:  # a slow check of a client gone still runs: the
            global ABANDONED  # process exits without waiting for it (it waited, signals
            ABANDONED = True  # held, a compile's tens of seconds after the line)
    if server.should_exit:  # Ctrl-C: uvicorn shut down gracefully and swallowed the interrupt
        raise KeyboardInterrupt  # so the exit status is 130, as for every command (cli.main)
    return 0
