"""Secret comparisons: constant-time functions or lookups by hash, never ``==``.

Each function in SECRET_COMPARISONS compares an API key, a login, mail or
invitation token, a webhook signature, a CSRF token, a TOTP code or an OAuth
client secret with what the server stored. The static check parses each one
and fails on any ``==`` or ``!=`` between two computed values outside a
SQL ``where``/``filter`` clause (an indexed lookup by hash), so a new plain
comparison in these functions fails the test. The behaviour checks below
show that each function still accepts the right secret and rejects a wrong one.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import inspect
import secrets
import textwrap
import time

import pytest

from fkod.core.auth import totp
from fkod.core.auth.oauth_models import OAuthClient, digest
from fkod.core.webhooks import signing

# (module, qualified name) of every function that compares a secret.
SECRET_COMPARISONS = (
    ("fkod.core.gateway", "authenticate_api_key"),
    ("fkod.core.gateway", "_load_key"),
    ("fkod.core.gateway", "_load_oauth_token"),
    ("fkod.partners.api_keys", "test_api_key"),
    ("fkod.core.auth.oauth_models", "OAuthClient.check_client_secret"),
    ("fkod.core.auth.account_mail", "_use_token"),
    ("fkod.partners.members", "_find_invitation"),
    ("fkod.core.auth.totp", "matching_step"),
    ("fkod.core.webhooks.signing", "verify_fkod_signature"),
    ("fkod.core.webhooks.signing", "verify_standard_signature"),
    ("fkod.core.webhooks.signing", "_any_matches"),
    ("fkod.core.webhooks.debugger", "_matches"),
    ("fkod.portal.session", "PortalSession.check_csrf"),
    ("fkod.core.oauth.session", "BrowserSession.check_csrf"),
    ("fkod.core.oauth.grants", "_find_refresh"),
)

# Plain comparisons that are not secret comparisons, with the reason.
ALLOWED_COMPARISONS = {
    # The key was already found by an indexed lookup on either hash, so this
    # only distinguishes the current secret from the previous one in a grace period.
    ("fkod.core.gateway", "authenticate_api_key", "key.key_hash != key_hash"),
}

CONSTANT_TIME_CALLS = {"compare_digest"}
SQL_CLAUSE_CALLS = {"where", "filter", "filter_by", "join", "outerjoin", "or_",
                    "and_"}
# Functions in SECRET_COMPARISONS that others in the list delegate to.
HELPER_CALLS = {"_any_matches", "_load_key"}


def find_function(tree: ast.Module, qualified_name: str) -> ast.FunctionDef:
    """Return the function or method named ``qualified_name`` (``Class.method``) or fail."""
    names = qualified_name.split(".")
    nodes = tree.body
    found = None
    for name in names:
        matches = [node for node in nodes
                   if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name]
        if not matches:
            # A method may be the only one of its name in the module.
            matches = [node for node in ast.walk(tree)
                       if isinstance(node, ast.FunctionDef) and node.name == name]
        assert len(matches) == 1, f"{qualified_name}: found {len(matches)} definitions of {name}"
        found = matches[0]
        nodes = found.body
    assert isinstance(found, ast.FunctionDef), f"{qualified_name} is not a function"
    return found


def is_fixed_value(node: ast.expr) -> bool:
    """Tell whether ``node`` is a literal, None or an UPPER_CASE constant."""
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.Name):
        return node.id.isupper()
    if isinstance(node, ast.Attribute):
        return node.attr.isupper()
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return node.func.id in {"len", "type", "isinstance"}
    return False


def call_name(node: ast.Call) -> str:
    func = node.func
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return ""


def plain_comparisons(function: ast.FunctionDef) -> list[str]:
    """Return the source of each ``==``/``!=`` between two computed values outside SQL clauses."""
    in_sql = set()
    for node in ast.walk(function):
        if isinstance(node, ast.Call) and call_name(node) in SQL_CLAUSE_CALLS:
            for argument in [*node.args, *(keyword.value for keyword in node.keywords)]:
                in_sql.update(id(inner) for inner in ast.walk(argument))

    found = []
    for node in ast.walk(function):
        if not isinstance(node, ast.Compare) or id(node) in in_sql:
            continue
        operands = [node.left, *node.comparators]
        for index, operator in enumerate(node.ops):
            if not isinstance(operator, (ast.Eq, ast.NotEq)):
                continue
            left, right = operands[index], operands[index + 1]
            if not (is_fixed_value(left) or is_fixed_value(right)):
                found.append(ast.unparse(ast.Compare(left, [operator], [right])))
    return found


def uses_constant_time_or_lookup(function: ast.FunctionDef) -> bool:
    calls = {call_name(node) for node in ast.walk(function) if isinstance(node, ast.Call)}
    return bool(calls & (CONSTANT_TIME_CALLS | SQL_CLAUSE_CALLS | HELPER_CALLS))


@pytest.mark.parametrize(("module_name", "qualified_name"), SECRET_COMPARISONS)
def test_secret_compared_without_equality(module_name, qualified_name):
    module = importlib.import_module(module_name)
    tree = ast.parse(textwrap.dedent(inspect.getsource(module)))
    function = find_function(tree, qualified_name)

    comparisons = [text for text in plain_comparisons(function)
                   if (module_name, qualified_name.split(".")[-1], text)
                   not in ALLOWED_COMPARISONS]

    assert comparisons == [], f"{module_name}.{qualified_name} compares with =="
    assert uses_constant_time_or_lookup(function), (
        f"{module_name}.{qualified_name} neither calls compare_digest nor looks a hash up")


def test_static_check_flags_equality():
    source = "def check(stored, submitted):\n    return stored == submitted\n"
    function = find_function(ast.parse(source), "check")

    assert plain_comparisons(function) == ["stored == submitted"]


def test_static_check_accepts_sql_lookup():
    source = ("def find(session, token):\n"
              "    return session.scalar(select(T).where(T.token_hash == digest(token)))\n")
    function = find_function(ast.parse(source), "find")

    assert plain_comparisons(function) == []


def test_client_secret_check():
    secret = secrets.token_urlsafe(32)
    application = OAuthClient(client_secret=digest(secret))

    assert application.check_client_secret(secret) is True
    assert application.check_client_secret(secret + "x") is False
    assert application.check_client_secret("") is False
    assert OAuthClient(client_secret="").check_client_secret(secret) is False


def test_totp_code_check():
    secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
    now = time.time()
    step = totp.current_step(now)
    code = totp.code_at_step(secret, step)
    wrong = f"{(int(code) + 1) % 10 ** len(code):0{len(code)}d}"

    assert totp.matching_step(secret, code, last_step=None, now=now) == step
    assert totp.matching_step(secret, wrong, last_step=None, now=now) is None
    assert totp.matching_step(secret, code, last_step=step, now=now) is None


def test_webhook_signature_check():
    secret = signing.generate_secret()
    body = b'{"type": "partner.verified"}'
    timestamp = int(time.time())
    headers = signing.sign_delivery([secret], message_id="msg_1", timestamp=timestamp, body=body)
    header = headers[signing.FKOD_SIGNATURE_HEADER]

    assert signing.verify_fkod_signature(secret, header, body) == timestamp
    assert signing.verify_standard_signature(secret, headers, body) == timestamp
    with pytest.raises(signing.SignatureError):
        signing.verify_fkod_signature(secret, header, body + b" ")
    with pytest.raises(signing.SignatureError):
        signing.verify_standard_signature(signing.generate_secret(), headers, body)


def test_mail_token_stored_as_hash():
    from fkod.core.auth.account_mail import hash_token

    token = secrets.token_urlsafe(32)

    assert hash_token(token) == hashlib.sha256(token.encode()).hexdigest()
    assert token not in hash_token(token)
