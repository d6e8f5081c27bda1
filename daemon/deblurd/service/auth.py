"""CURVE authentication and encryption of the daemon's network endpoints (issue 7).

An ``ipc://`` endpoint is protected by its folder's permissions. A network endpoint
(anything but ``ipc://`` and ``inproc://``, e.g. ``tcp://``) is served with ZeroMQ CURVE:
the daemon's socket is a CURVE server with the server key pair, and pyzmq's
:class:`~zmq.auth.thread.ThreadAuthenticator` (ZAP) admits only clients whose public key
is on file. A client without a key, or with another key, fails the handshake: it never
gets a reply nor a result message.

The key folder (``service.curve_keys_dir``; unset = ``$CREDENTIALS_DIRECTORY`` when systemd
passes credentials with ``LoadCredential=``, else ``<state directory>/curve``), in
:func:`zmq.auth.create_certificates`' format:

* ``server.key_secret``: the server's key pair (mode 0600 or stricter: refused otherwise);
* ``clients/*.key``: the public keys of the allowed clients. When there is no ``clients/``
  folder, the ``*.key`` files of the key folder itself: systemd's
  ``LoadCredential=clients:/etc/deblurd/curve/clients`` puts them there as
  ``clients_NAME.key``.

Without usable keys the daemon refuses to start (:class:`~deblurd.errors.ConfigError`
naming ``service.curve_keys_dir``: exit 78) unless ``service.insecure = true``, which serves
network endpoints in the clear, with a loud warning. Key material is never logged, and
never read from the config file.

:func:`make_keys` writes a server key pair and client key pairs (``deblurd keys DIR``).
"""

from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deblurd.errors import ConfigError, DeblurdError

if TYPE_CHECKING:
    import zmq
    from zmq.auth.thread import ThreadAuthenticator

    from deblurd.settings.service import ServiceSettings

log = logging.getLogger(__name__)

KEY = "service.curve_keys_dir"
SERVER_SECRET = "server.key_secret"
CLIENTS = "clients"
PRIVATE = "private"
_LOCAL = ("ipc://", "inproc://")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def is_network(endpoint: str) -> bool:
    """True for endpoints other processes can reach over the network (not ipc/inproc)."""
    return not endpoint.startswith(_LOCAL)


def default_state_dir() -> Path:
    """``$STATE_DIRECTORY`` (systemd's ``StateDirectory=``) or ``~/.local/state/deblurd``."""
    env = os.environ.get("STATE_DIRECTORY")
    return Path(env.split(":")[0]) if env else Path.home() / ".local" / "state" / "deblurd"


def default_keys_dir() -> Path:
    """``$CREDENTIALS_DIRECTORY`` when set, else ``<state directory>/curve``."""
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    return Path(creds) if creds else default_state_dir() / "curve"


def keys_dir(curve_keys_dir: str | None) -> Path:
    return Path(curve_keys_dir).expanduser() if curve_keys_dir else default_keys_dir()


def clients_location(folder: Path) -> Path:
    """Where the allowed clients' ``*.key`` files are: ``folder/clients`` when it exists,
    else ``folder`` itself (systemd credentials are one flat folder)."""
    sub = folder / CLIENTS
    return sub if sub.is_dir() else folder


@dataclass(frozen=True)
class ServerKeys:
    """The server key pair (z85, 40 bytes each) and the allowed clients' folder."""

    folder: Path
    public: bytes
    secret: bytes = field(repr=False)
    clients_dir: Path
    clients: int


def _problem(message: str) -> ConfigError:
    return ConfigError(message, [(KEY, message)])


def load_server_keys(folder: Path) -> ServerKeys:
    """Read and check the key folder. Raises ConfigError naming ``service.curve_keys_dir``
    with what is missing and how to make it (never the key material)."""
    from zmq.auth import load_certificate, load_certificates

    hint = f"(make them with: deblurd keys {folder})"
    if not folder.is_dir():
        raise _problem(f"{folder}: no CURVE key folder, needed for a tcp:// endpoint {hint}")
    secret_file = folder / SERVER_SECRET
    try:
        st = secret_file.stat()
    except OSError as exc:
        raise _problem(f"{secret_file}: cannot read the server key pair: {exc} {hint}") from exc
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise _problem(
            f"{secret_file}: the server's secret key is readable by others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}; fix: chmod 600 {secret_file})"
        )
    try:
        public, secret = load_certificate(secret_file)
    except (OSError, ValueError) as exc:
        raise _problem(f"{secret_file}: not a ZeroMQ certificate: {exc}") from exc
    if secret is None or len(secret) != 40 or len(public) != 40:
        raise _problem(f"{secret_file}: no valid z85 secret-key/public-key pair in it")
    location = clients_location(folder)
    try:
        allowed = load_certificates(location)
    except (OSError, ValueError) as exc:
        raise _problem(f"{location}: cannot read the client public keys: {exc}") from exc
    if not allowed:
        raise _problem(
            f"{location}: no client public key (*.key): nobody could connect "
            f"(make one with: deblurd keys {folder} --client NAME)"
        )
    return ServerKeys(folder, public, secret, location, len(allowed))


class SocketSecurity:
    """What the daemon's sockets need: CURVE (``keys``) for network endpoints, or nothing.

    :meth:`start` runs the authenticator on the daemon's context before any socket binds;
    :meth:`apply` makes one socket a CURVE server when its endpoint is a network one;
    :meth:`stop` before the context is terminated."""

    def __init__(self, keys: ServerKeys | None) -> None:
        self.keys = keys
        self._auth: ThreadAuthenticator | None = None

    @classmethod
    def for_service(cls, svc: ServiceSettings, endpoints: Iterable[str]) -> SocketSecurity:
        """Load the keys when an endpoint is a network one (ConfigError when they are
        missing), or warn loudly under ``service.insecure = true``."""
        network = [e for e in endpoints if is_network(e)]
        if not network:
            return cls(None)
        if svc.insecure:
            log.warning(
                "SECURITY: service.insecure = true: %s served WITHOUT authentication or "
                "encryption; anyone who can reach it can trigger captures, read the status "
                "and receive every result. Configure CURVE keys (service.curve_keys_dir) "
                "and remove service.insecure.",
                ", ".join(network),
            )
            return cls(None)
        keys = load_server_keys(keys_dir(svc.curve_keys_dir))
        log.info("CURVE on %s: %d allowed client key(s) in %s",
                 ", ".join(network), keys.clients, keys.clients_dir)  # fmt: skip
        return cls(keys)

    @property
    def enabled(self) -> bool:
        return self.keys is not None

    def start(self, context: zmq.Context[Any]) -> None:
        if self.keys is None or self._auth is not None:
            return
        from zmq.auth.thread import ThreadAuthenticator

        auth = ThreadAuthenticator(context, log=logging.getLogger("deblurd.zap"))
        auth.start()
        auth.configure_curve(domain="*", location=str(self.keys.clients_dir))
        self._auth = auth
        loaded = len(auth.certs.get("*", {}))
        if loaded == 0:  # configure_curve logs and swallows its errors
            self.stop()
            raise _problem(f"{self.keys.clients_dir}: the authenticator loaded no client key")

    def apply(self, sock: zmq.Socket[Any], endpoint: str) -> bool:
        """Make ``sock`` (not bound yet) a CURVE server when ``endpoint`` is a network one;
        True when it did."""
        if self.keys is None or not is_network(endpoint):
            return False
        sock.curve_secretkey = self.keys.secret
        sock.curve_publickey = self.keys.public
        sock.curve_server = True
        return True

    def stop(self) -> None:
        if self._auth is not None:
            self._auth.stop()
            self._auth = None


def bind_server(
    sock: zmq.Socket[Any], endpoint: str, security: SocketSecurity | None, role: str
) -> tuple[str, bool]:
    """Bind the daemon's ``role`` socket (``control``, ``results``; its options set) at
    ``endpoint``, a CURVE server first where ``security`` says so (:meth:`SocketSecurity.apply`).
    Returns the endpoint bound (ZeroMQ's ``LAST_ENDPOINT``: ``tcp://*:0`` gets its port)
    and whether CURVE is on. A failed bind closes ``sock`` and raises DeblurdError."""
    import zmq

    curve = security.apply(sock, endpoint) if security is not None else False
    try:
        sock.bind(endpoint)
        return str(sock.getsockopt_string(zmq.LAST_ENDPOINT)) or endpoint, curve
    except zmq.ZMQError as exc:
        sock.close(0)
        raise DeblurdError(f"cannot bind the {role} socket at {endpoint}: {exc}") from exc


# -- client side ------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientKeys:
    """A client's key pair and the server's public key (z85)."""

    server_public: bytes
    public: bytes
    secret: bytes = field(repr=False)


def load_client_keys(server_key: str | Path, client_key: str | Path) -> ClientKeys:
    """``server_key``: the server's public certificate (``server.key``); ``client_key``:
    this client's key pair (``NAME.key_secret``). DeblurdError naming the file."""
    from zmq.auth import load_certificate

    try:
        server_public, _ = load_certificate(server_key)
    except (OSError, ValueError) as exc:
        raise DeblurdError(f"{server_key}: not a ZeroMQ public certificate: {exc}") from exc
    try:
        public, secret = load_certificate(client_key)
    except (OSError, ValueError) as exc:
        raise DeblurdError(f"{client_key}: not a ZeroMQ certificate: {exc}") from exc
    if secret is None:
        raise DeblurdError(f"{client_key}: holds no secret key (use the .key_secret file)")
    return ClientKeys(server_public, public, secret)


def apply_client(sock: zmq.Socket[Any], keys: ClientKeys | None, endpoint: str) -> None:
    """Make ``sock`` (not connected yet) a CURVE client when ``endpoint`` is a network one."""
    if keys is None or not is_network(endpoint):
        return
    sock.curve_serverkey = keys.server_public
    sock.curve_publickey = keys.public
    sock.curve_secretkey = keys.secret


# -- key generation ---------------------------------------------------------------------


def make_keys(folder: Path, clients: Sequence[str] = ()) -> list[Path]:
    """Create the server key pair in ``folder`` (kept when it exists) and one key pair per
    client name; returns the files written.

    Layout: ``server.key_secret`` (the daemon's; 0600), ``server.key`` (public: give it to
    clients, ``deblurctl --server-key``), ``clients/NAME.key`` (public: the daemon admits
    it), ``private/NAME.key_secret`` (the client's key pair: move it to that client,
    ``deblurctl --client-key``, and delete it here). Folders 0700, files written under
    umask 077."""
    from zmq.auth import create_certificates

    for name in clients:
        if not _NAME.match(name):
            raise DeblurdError(f"client name {name!r}: use letters, digits, '_', '.', '-'")
    written: list[Path] = []
    old = os.umask(0o077)
    try:
        for sub in (folder, folder / CLIENTS, folder / PRIVATE):
            sub.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not (folder / SERVER_SECRET).exists():
            pub, sec = create_certificates(folder, "server")
            written += [Path(sec), Path(pub)]
        for name in clients:
            target = folder / CLIENTS / f"{name}.key"
            if target.exists() or (folder / PRIVATE / f"{name}.key_secret").exists():
                raise DeblurdError(f"{target}: a client named {name!r} exists already")
            pub, sec = create_certificates(folder / PRIVATE, name)
            os.replace(pub, target)
            written += [Path(sec), target]
    except OSError as exc:
        raise DeblurdError(f"{folder}: cannot write keys: {exc}") from exc
    finally:
        os.umask(old)
    return written
