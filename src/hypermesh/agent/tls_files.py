"""The agent's TLS certificate and key files, checked before serving so that each problem is one line naming the
config key: OpenSSL says "[SSL] PEM lib" for a junk certificate, a junk key and a certificate given as the key alike.
"""

from __future__ import annotations

import ssl

from hypermesh._files import FileReadError, FileTooLarge, NotRegularFile, read_regular_file
from hypermesh.errors import InvalidInput

__all__ = ["check_tls_files"]

# A PEM certificate chain or key is a few KiB; past this it is not one (and /dev/zero never ends).
MAX_PEM_BYTES = 1024 * 1024


class _EncryptedKey(Exception):
    pass


def _refuse_passphrase() -> bytes:
    raise _EncryptedKey


def check_tls_files(cert_file: str, key_file: str | None, where: str) -> None:
    """Check the certificate and key one at a time, so an error names the key and says what is wrong with it.

    The key is loaded with a passphrase callback that refuses: an encrypted key would otherwise make OpenSSL prompt
    for its passphrase on the terminal (a service hangs there, or fails with EINVAL).
    """
    key = key_file or cert_file
    cert_text = _read_pem(cert_file, f"{where}.cert_file")
    key_text = cert_text if key_file is None else _read_pem(key_file, f"{where}.key_file")
    if "-----BEGIN CERTIFICATE-----" not in cert_text:
        held = " (it holds a private key)" if "PRIVATE KEY-----" in cert_text else ""
        raise InvalidInput(
            f"{where}.cert_file: {cert_file} is not a PEM certificate{held}; expected -----BEGIN CERTIFICATE-----"
        )
    try:
        # Parses every certificate in the file (and nothing else), independently of the key.
        ssl.create_default_context().load_verify_locations(cafile=cert_file)
    except ssl.SSLError as exc:
        raise InvalidInput(f"{where}.cert_file: {cert_file} is not a PEM certificate ({exc.reason or exc})") from None
    if "PRIVATE KEY-----" not in key_text:
        held = " (it holds a certificate)" if "-----BEGIN CERTIFICATE-----" in key_text else ""
        raise InvalidInput(
            f"{where}.key_file: {key} is not a PEM private key{held}; expected -----BEGIN PRIVATE KEY----- "
            "(or RSA/EC PRIVATE KEY)"
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert_file, key_file, password=_refuse_passphrase)
    except _EncryptedKey:
        raise InvalidInput(
            f"{where}.key_file: {key} is encrypted with a passphrase, which the agent cannot ask for; "
            f"decrypt it (openssl pkey -in {key} -out agent.key) and keep that file readable only by the agent"
        ) from None
    except ssl.SSLError as exc:
        # The certificate parsed above, so OpenSSL's complaint is about the key, or about the two together.
        # KEY_VALUES_MISMATCH: a key of the certificate's type from another pair. NO_CERTIFICATE_ASSIGNED: a key of
        # another type (EC for an RSA certificate): OpenSSL files it in that type's slot, which holds no certificate.
        # Either way the key itself parsed (a junk key fails earlier with "PEM lib").
        mismatch = {
            "KEY_VALUES_MISMATCH": "a key from another pair",
            "NO_CERTIFICATE_ASSIGNED": "a key of another type than the certificate's, e.g. EC for RSA",
        }
        if exc.reason in mismatch:
            raise InvalidInput(
                f"{where}.key_file: {key} does not match the certificate in cert_file {cert_file} "
                f"({mismatch[exc.reason]})"
            ) from None
        raise InvalidInput(f"{where}.key_file: {key} is not a PEM private key ({exc.reason or exc})") from None


def _read_pem(path: str, where: str) -> str:
    try:
        data = read_regular_file(path, MAX_PEM_BYTES).data
    except NotRegularFile as exc:  # a FIFO would block the open and the read: never wait for a writer
        raise InvalidInput(f"{where}: {path} is {exc.kind}, not a PEM file") from None
    except FileTooLarge:
        raise InvalidInput(f"{where}: {path} is over 1 MiB, not a PEM file") from None
    except (OSError, FileReadError) as exc:
        error = exc.error if isinstance(exc, FileReadError) else exc
        raise InvalidInput(f"{where}: cannot read {path} ({error.strerror or error})") from None
    return data.decode("ascii", errors="replace")
