"""The smtp mail back end delivers a password-reset mail to a real SMTP server on loopback."""

from __future__ import annotations

import email.message
import re
import socket
import threading
import time

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Message

from fkod.core.testing import TestClient

NEW_PASSWORD = "a brand new passphrase 42"


class Inbox(Message):
    """Keeps every message the SMTP server accepts."""

    def __init__(self):
        super().__init__()
        self.messages: list[email.message.Message] = []
        self._lock = threading.Lock()

    def handle_message(self, message: email.message.Message) -> None:
        with self._lock:
            self.messages.append(message)

    def wait_for(self, recipient: str, timeout: float = 15) -> email.message.Message:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                for message in self.messages:
                    if message["To"] == recipient and "Reset" in message["Subject"]:
                        return message
            time.sleep(0.05)
        raise AssertionError(f"no reset mail to {recipient} within {timeout} s")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def smtp_server():
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller, inbox
    controller.stop()


def test_reset_mail_delivered_over_smtp(app_factory, smtp_server):
    controller, inbox = smtp_server
    client = TestClient(app_factory(**{
        "fkod.mail.backend": "smtp",
        "fkod.mail.smtp_host": "127.0.0.1",
        "fkod.mail.smtp_port": str(controller.port),
        "fkod.mail.smtp_starttls": "false",
        "fkod.mail.from_address": "F-KOD Partners <partners@fkod.example>",
    }))
    email_address = client.register_partner()["user"]["email"]

    client.web.post_json("/api/auth/password-reset", {"email": email_address}, status=202)
    client.drain_tasks()
    message = inbox.wait_for(email_address)

    assert message["From"] == "F-KOD Partners <partners@fkod.example>"
    assert message["X-RcptTo"] == email_address
    assert message["Subject"] == "Reset your F-KOD password"
    token = re.search(r"\?token=([A-Za-z0-9_-]+)", message.get_payload(decode=True).decode())
    assert token is not None
    client.web.post_json("/api/auth/password-reset/confirm",
                         {"token": token.group(1), "new_password": NEW_PASSWORD}, status=200)
    assert client.login(email_address, NEW_PASSWORD)
    assert client.registry["mailer"].outbox == []
