"""Code samples for every operation, generated from the OpenAPI document.

Each sample sends the operation's method to its path on this server, with the
operation's required query parameters. The body is built from the request
schema (its examples, enums, defaults or types). The credential of the first
security requirement is read from an environment variable.
"""

from __future__ import annotations

import dataclasses
import json
import pprint
import shlex
from urllib.parse import urlencode

LANGUAGES = ("curl", "python", "javascript", "go", "java")
METHODS = ("get", "put", "post", "delete", "patch")

# Environment variable with the credential of each security scheme, and the
# authorization type that precedes it.
CREDENTIALS = {
    "apiKey": ("Bearer", "FKOD_API_KEY"),
    "oauth2": ("Bearer", "FKOD_ACCESS_TOKEN"),
    "loginToken": ("Bearer", "FKOD_LOGIN_TOKEN"),
    "adminToken": ("Bearer", "FKOD_ADMIN_TOKEN"),
    # Base64 of "client_id:client_secret".
    "oauthClientBasic": ("Basic", "FKOD_CLIENT_CREDENTIALS"),
}
_FORMATS = {"date-time": "2026-01-01T00:00:00Z", "date": "2026-01-01",
            "email": "dev@example.com", "uri": "https://example.com/callback",
            "url": "https://example.com/callback", "uuid": "00000000-0000-4000-8000-000000000000"}
MAX_EXAMPLE_DEPTH = 6


@dataclasses.dataclass(frozen=True)
class Sample:
    operation_id: str
    method: str
    path: str
    language: str
    code: str


@dataclasses.dataclass(frozen=True)
class HttpCall:
    """The HTTP request that the sample of every language sends."""

    method: str
    url: str
    authorization: tuple[str, str] | None
    content_type: str | None
    body: str | None
    # The decoded body of a JSON request, for languages that encode it themselves.
    json_value: object = None


class ExampleBuilder:
    """Build an example value for a JSON Schema of the document."""

    def __init__(self, document: dict):
        self.schemas = document.get("components", {}).get("schemas", {})

    def value(self, schema: dict, depth: int = 0):
        if depth > MAX_EXAMPLE_DEPTH:
            return None
        if "$ref" in schema:
            return self.value(self.schemas[schema["$ref"].rsplit("/", 1)[-1]], depth + 1)

        for key in ("example", "const", "default"):
            if key in schema and schema[key] is not None:
                return schema[key]
        if schema.get("examples"):
            return schema["examples"][0]
        if schema.get("enum"):
            return schema["enum"][0]

        if "allOf" in schema:
            merged: dict = {}
            for part in schema["allOf"]:
                part_value = self.value(part, depth + 1)
                if isinstance(part_value, dict):
                    merged.update(part_value)
            return merged
        for key in ("oneOf", "anyOf"):
            if schema.get(key):
                return self.value(schema[key][0], depth + 1)

        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((item for item in kind if item != "null"), None)
        if kind == "object" or (kind is None and "properties" in schema):
            return self.object_value(schema, depth)
        if kind == "array":
            return [self.value(schema.get("items", {}), depth + 1)]
        if kind == "integer":
            return int(schema.get("minimum", 1))
        if kind == "number":
            return float(schema.get("minimum", 1))
        if kind == "boolean":
            return True
        if kind == "string":
            return self.string_value(schema)
        return None

    def object_value(self, schema: dict, depth: int) -> dict:
        properties = schema.get("properties", {})
        required = schema.get("required") or list(properties)
        return {name: self.value(properties[name], depth + 1)
                for name in required if name in properties
                and not properties[name].get("readOnly")}

    @staticmethod
    def string_value(schema: dict) -> str:
        if schema.get("format") in _FORMATS:
            return _FORMATS[schema["format"]]
        text = "example"
        minimum = schema.get("minLength", 0)
        if minimum > len(text):
            text = text + "x" * (minimum - len(text))
        maximum = schema.get("maxLength")
        if maximum is not None:
            text = text[:maximum]
        return text


def iter_operations(document: dict):
    """Yield ``(path, method, operation)`` for each operation of the document, in path order."""
    for path, item in document.get("paths", {}).items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def http_call(document: dict, base_url: str, path: str, method: str, op: dict) -> HttpCall:
    builder = ExampleBuilder(document)
    url_path = path
    query = {}
    for parameter in op.get("parameters", ()):
        if parameter["in"] == "path":
            url_path = url_path.replace("{" + parameter["name"] + "}",
                                        parameter["name"].upper())
        elif parameter["in"] == "query" and parameter.get("required"):
            query[parameter["name"]] = builder.value(parameter.get("schema", {}))
    url = base_url.rstrip("/") + url_path
    if query:
        url += "?" + urlencode(query)

    content_type = body = json_value = None
    content = op.get("requestBody", {}).get("content", {})
    if "application/json" in content:
        content_type = "application/json"
        json_value = builder.value(content["application/json"].get("schema", {})) or {}
        body = json.dumps(json_value, indent=2)
    elif "application/x-www-form-urlencoded" in content:
        content_type = "application/x-www-form-urlencoded"
        schema = content["application/x-www-form-urlencoded"].get("schema", {})
        fields = builder.value(schema) or {}
        body = urlencode({name: value for name, value in fields.items() if value is not None})

    authorization = None
    for requirement in op.get("security", ()):
        for scheme in requirement:
            if scheme in CREDENTIALS:
                authorization = CREDENTIALS[scheme]
                break
        if authorization is not None:
            break
    return HttpCall(method.upper(), url, authorization, content_type, body, json_value)


# One function per language ----------------------------------------------------------


def curl_code(call: HttpCall) -> str:
    lines = [f"curl -sS -X {call.method} {shlex.quote(call.url)}"]
    if call.authorization:
        kind, variable = call.authorization
        lines.append(f'-H "Authorization: {kind} ${variable}"')
    if call.body is not None:
        lines.append(f"-H {shlex.quote('Content-Type: ' + call.content_type)}")
        lines.append(f"--data {shlex.quote(call.body)}")
    return " \\\n  ".join(lines) + "\n"


def python_code(call: HttpCall) -> str:
    headers = []
    if call.authorization:
        kind, variable = call.authorization
        headers.append(f'"Authorization": "{kind} " + os.environ["{variable}"]')
    is_json = call.content_type == "application/json"
    if call.body is not None and not is_json:
        headers.append(f'"Content-Type": {json.dumps(call.content_type)}')
    lines = ["import os", ""] if call.authorization else []
    lines += ["import httpx", ""]
    if call.body is not None:
        value = call.json_value if is_json else call.body
        lines.append(f"body = {pprint.pformat(value, sort_dicts=False)}")
    lines.append("response = httpx.request(")
    lines.append(f"    {json.dumps(call.method)},")
    lines.append(f"    {json.dumps(call.url)},")
    lines.append("    headers={" + ", ".join(headers) + "},")
    if call.body is not None:
        lines.append("    json=body," if is_json else "    content=body,")
    lines.append(")")
    lines.append("print(response.status_code, response.text)")
    return "\n".join(lines) + "\n"


def javascript_code(call: HttpCall) -> str:
    headers = []
    if call.authorization:
        kind, variable = call.authorization
        headers.append(f'"Authorization": `{kind} ${{process.env.{variable}}}`')
    if call.body is not None:
        headers.append(f'"Content-Type": {json.dumps(call.content_type)}')
    lines = [f"const response = await fetch({json.dumps(call.url)}, {{",
             f"  method: {json.dumps(call.method)},",
             "  headers: {" + ", ".join(headers) + "},"]
    if call.content_type == "application/json":
        lines.append(f"  body: JSON.stringify({call.body}),")
    elif call.body is not None:
        lines.append(f"  body: {json.dumps(call.body)},")
    lines.append("});")
    lines.append("console.log(response.status, await response.text());")
    return "\n".join(lines) + "\n"


def go_code(call: HttpCall) -> str:
    imports = ['"fmt"', '"io"', '"net/http"']
    if call.authorization:
        imports.append('"os"')
    if call.body is not None:
        imports.append('"strings"')
    reader = f"strings.NewReader({json.dumps(call.body)})" if call.body is not None else "nil"
    lines = ["package main", "", "import ("] + [f"\t{item}" for item in imports] + [")", "",
             "func main() {",
             f"\treq, err := http.NewRequest({json.dumps(call.method)}, "
             f"{json.dumps(call.url)}, {reader})",
             "\tif err != nil {", "\t\tpanic(err)", "\t}"]
    if call.authorization:
        kind, variable = call.authorization
        lines.append(f'\treq.Header.Set("Authorization", "{kind} "+os.Getenv("{variable}"))')
    if call.body is not None:
        lines.append(f'\treq.Header.Set("Content-Type", {json.dumps(call.content_type)})')
    lines += ["\tresp, err := http.DefaultClient.Do(req)", "\tif err != nil {", "\t\tpanic(err)",
              "\t}", "\tdefer resp.Body.Close()", "\tdata, err := io.ReadAll(resp.Body)",
              "\tif err != nil {", "\t\tpanic(err)", "\t}",
              "\tfmt.Println(resp.StatusCode, string(data))", "}"]
    return "\n".join(lines) + "\n"


def java_code(call: HttpCall) -> str:
    publisher = (f"HttpRequest.BodyPublishers.ofString({json.dumps(call.body)})"
                 if call.body is not None else "HttpRequest.BodyPublishers.noBody()")
    lines = ["import java.net.URI;", "import java.net.http.HttpClient;",
             "import java.net.http.HttpRequest;", "import java.net.http.HttpResponse;", "",
             "public class Example {",
             "    public static void main(String[] args) throws Exception {",
             "        HttpRequest request = HttpRequest.newBuilder("
             f"URI.create({json.dumps(call.url)}))"]
    if call.authorization:
        kind, variable = call.authorization
        lines.append(f'            .header("Authorization", "{kind} " + '
                     f'System.getenv("{variable}"))')
    if call.body is not None:
        lines.append(f'            .header("Content-Type", {json.dumps(call.content_type)})')
    lines += [f"            .method({json.dumps(call.method)}, {publisher})",
              "            .build();",
              "        HttpResponse<String> response = HttpClient.newHttpClient()",
              "            .send(request, HttpResponse.BodyHandlers.ofString());",
              '        System.out.println(response.statusCode() + " " + response.body());',
              "    }", "}"]
    return "\n".join(lines) + "\n"


WRITERS = {"curl": curl_code, "python": python_code, "javascript": javascript_code,
           "go": go_code, "java": java_code}


def generate_samples(document: dict, base_url: str, *, operation_id: str | None = None,
                     language: str | None = None) -> list[Sample]:
    """Return the samples of every operation (or one) in every language (or one)."""
    languages = (language,) if language else LANGUAGES
    samples = []
    for path, method, op in iter_operations(document):
        if operation_id is not None and op.get("operationId") != operation_id:
            continue
        call = http_call(document, base_url, path, method, op)
        for name in languages:
            samples.append(Sample(op["operationId"], method.upper(), path, name,
                                  WRITERS[name](call)))
    return samples


def operation_ids(document: dict) -> set[str]:
    return {op.get("operationId") for _path, _method, op in iter_operations(document)}
