"""A real SMTP server for the tests: aiosmtpd (Debian's python3-aiosmtpd).

    smtp_sink.py PORT MAILDIR [--tls CERT KEY] [--auth USER PASSWORD]

Saves every accepted message, exactly as received, to MAILDIR/N.eml and
the envelope to MAILDIR/N.envelope.json. With --tls it offers STARTTLS and
requires it before AUTH and MAIL; with --auth it requires AUTH PLAIN/LOGIN
with that user and password. Prints "ready" once it listens on 127.0.0.1.
"""

import asyncio
import json
import os
import ssl
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Save:
    def __init__(self, maildir):
        self.maildir = maildir
        self.n = 0

    async def handle_DATA(self, server, session, envelope):
        self.n += 1
        base = os.path.join(self.maildir, str(self.n))
        with open(base + ".eml.partial", "wb") as f:
            f.write(envelope.original_content)
        with open(base + ".envelope.json", "w") as f:
            json.dump(
                {
                    "mail_from": envelope.mail_from,
                    "rcpt_tos": envelope.rcpt_tos,
                    "tls": session.ssl is not None,
                    "auth": session.authenticated,
                },
                f,
            )
        os.rename(base + ".eml.partial", base + ".eml")
        return "250 Message accepted for delivery"


def main():
    args = sys.argv[1:]
    port, maildir = int(args[0]), args[1]
    tls, auth = None, None
    rest = args[2:]
    while rest:
        if rest[0] == "--tls":
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(rest[1], rest[2])
            rest = rest[3:]
        elif rest[0] == "--auth":
            auth = (rest[1].encode(), rest[2].encode())
            rest = rest[3:]
        else:
            sys.exit(f"unknown argument {rest[0]}")

    def authenticator(server, session, envelope, mechanism, data):
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == auth
        return AuthResult(success=ok)

    kwargs = {}
    if auth:
        kwargs.update(
            authenticator=authenticator,
            auth_required=True,
            auth_require_tls=tls is not None,
        )
    if tls:
        kwargs.update(tls_context=tls, require_starttls=True)
    controller = Controller(Save(maildir), hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    print("ready", flush=True)
    try:
        asyncio.get_event_loop().run_forever()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
