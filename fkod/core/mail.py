"""Outgoing mail: password resets, email verification, invitations, ticket replies.

A message is queued only when the request's transaction commits, and a task
worker hands it to the configured back end:

* ``log`` writes it to the application log (development);
* ``smtp`` sends it through an SMTP server (production);
* ``memory`` keeps it in ``Mailer.outbox`` (tests and the demo).
"""

from __future__ import annotations

import dataclasses
import email.message
import logging
import smtplib
import threading

from fkod.core.settings import ConfigurationError

log = logging.getLogger(__name__)

SEND_ACTOR = "send_mail"


@dataclasses.dataclass(frozen=True)
class Message:
    """One plain-text message to one recipient."""

    to: str
    subject: str
    body: str


class Mailer:
    """Sends messages through the back end the settings choose."""

    def __init__(self, settings: dict):
        self.backend = settings["fkod.mail.backend"]
        self.from_address = settings["fkod.mail.from_address"]
        self.smtp_host = settings["fkod.mail.smtp_host"]
        self.smtp_port = settings["fkod.mail.smtp_port"]
        self.smtp_username = settings["fkod.mail.smtp_username"]
        self.smtp_password = settings["fkod.mail.smtp_password"]
        self.smtp_starttls = settings["fkod.mail.smtp_starttls"]
        self.smtp_timeout = settings["fkod.mail.smtp_timeout_seconds"]
        if self.backend == "smtp" and not self.smtp_host:
            raise ConfigurationError(
                "missing setting fkod.mail.smtp_host: fkod.mail.backend = smtp needs a host")
        self.outbox: list[Message] = []
        self._lock = threading.Lock()

    def send(self, to: str, subject: str, body: str) -> None:
        """Deliver one message now; SMTP errors are raised to the caller."""
        message = Message(to, subject, body)
        if self.backend == "memory":
            with self._lock:
                self.outbox.append(message)
        elif self.backend == "log":
            log.info("mail to %s: %s\n%s", to, subject, body,
                     extra={"mail_to": to, "subject": subject})
        else:
            self._send_smtp(message)

    def _send_smtp(self, message: Message) -> None:
        mime = email.message.EmailMessage()
        mime["From"] = self.from_address
        mime["To"] = message.to
        mime["Subject"] = message.subject
        mime.set_content(message.body)
        with smtplib.SMTP(self.smtp_host, self.smtp_port, timeout=self.smtp_timeout) as client:
            if self.smtp_starttls:
                client.starttls()
            if self.smtp_username:
                client.login(self.smtp_username, self.smtp_password)
            client.send_message(mime)
        log.info("mail sent", extra={"mail_to": message.to, "subject": message.subject})

    def messages_to(self, address: str) -> list[Message]:
        """Return the messages the memory back end holds for ``address``, oldest first."""
        with self._lock:
            return [message for message in self.outbox if message.to == address]


def send_after_commit(request, *, to: str, subject: str, body: str) -> None:
    """Queue a message that leaves only if the request's transaction commits."""
    request.registry["tasks"].send_after_commit(request.tm, SEND_ACTOR, to, subject, body)


def includeme(config):
    registry = config.registry
    mailer = Mailer(config.get_settings())
    registry["mailer"] = mailer

    def deliver(to: str, subject: str, body: str) -> None:
        try:
            mailer.send(to, subject, body)
        except (OSError, smtplib.SMTPException) as exc:
            # NOTE: a message the SMTP server refused is logged and dropped;
            # the user can ask for a new link.
            log.error("mail not sent", extra={"mail_to": to, "error": str(exc)[:200]})

    registry["tasks"].actor(deliver, name=SEND_ACTOR)
