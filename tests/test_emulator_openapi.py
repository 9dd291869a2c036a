"""OpenAPI conformance walker: every JSON body the emulator sends for the operations it
implements is validated against RingCentral's public OpenAPI spec.

One walk against a real emulator subprocess on loopback makes every request (token,
revoke, message list / single / PUT, FSync + ISync, call log, call record, recording
metadata, fax, SMS, MMS, greeting, answering rules, greeting metadata, message-store
report create / status / archive list, and error answers 400/401/404/415/416/429) and keeps
each answer. The spec's schema for that path + method + status validates the body;
statuses an operation does not declare use the spec's generic responses
(`components/responses/InvalidRequest`, `Unauthorized`, `NotFound`, ...).

Deliberate departures live in `tests/spec_departures.py`; they are applied to the spec
before validating, and `test_every_departure_is_still_needed` fails when one is no
longer needed.

Without the spec (a plain clone: it lives outside the repository, in ../shared/) these
tests skip; when the environment variable CI is set they fail instead, so a CI run can
never pass without checking conformance. RCFS_OPENAPI_SPEC names another spec file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import urllib.parse
from pathlib import Path
from typing import Any

import httpx
import pytest

from rcfs.emulator import media

import spec_departures
from conftest import basic_auth, spawn_emulator
from spec_departures import DEPARTURES, Departure

SPEC_PATH = Path(os.environ.get("RCFS_OPENAPI_SPEC") or (
    Path(__file__).resolve().parents[2] / "shared" / "ringcentral" / "openapi" / "rc-public-openapi.yml"))


def in_ci() -> bool:
    """CI systems set CI (GitHub, GitLab, ...: CI=true); an empty, 0 or false value is unset."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing(reason: str) -> None:
    """Skip on a developer's clone; fail in CI, where conformance must be checked."""
    if in_ci():
        pytest.fail(f"{reason} (CI is set: the conformance tests must run)", pytrace=False)
    pytest.skip(reason)

ACCT = "/restapi/v1.0/account/{accountId}"
EXT = ACCT + "/extension/{extensionId}"
T_TOKEN = "/restapi/oauth/token"
T_WSTOKEN = "/restapi/oauth/wstoken"
T_REVOKE = "/restapi/oauth/revoke"
T_LIST = EXT + "/message-store"
T_MSG = T_LIST + "/{messageId}"
T_CONTENT = T_MSG + "/content/{attachmentId}"
T_SYNC = EXT + "/message-sync"
T_CALLLOG = EXT + "/call-log"
T_CALL = T_CALLLOG + "/{callRecordId}"
T_RECORDING = ACCT + "/recording/{recordingId}"
T_FAX = EXT + "/fax"
T_SMS = EXT + "/sms"
T_MMS = EXT + "/mms"
T_GREETING = EXT + "/greeting"
T_PHONE_NUMBERS = EXT + "/phone-number"

T_EXT_LIST = ACCT + "/extension"
T_AUTHZ = EXT + "/authz-profile"
T_AUTHZ_CHECK = T_AUTHZ + "/check"
T_ACCOUNT_CALLLOG = ACCT + "/call-log"
T_ACCOUNT_CALL = T_ACCOUNT_CALLLOG + "/{callRecordId}"
T_ACCOUNT_CALLSYNC = ACCT + "/call-log-sync"

T_GREETING_GET = T_GREETING + "/{greetingId}"
T_RULES = EXT + "/answering-rule"
T_RULE = T_RULES + "/{ruleId}"
T_PRESETS = "/restapi/v1.0/dictionary/greeting"
T_PRESET = T_PRESETS + "/{greetingId}"
T_REPORT_CREATE = ACCT + "/message-store-report"
T_REPORT = T_REPORT_CREATE + "/{taskId}"
T_REPORT_ARCHIVE = T_REPORT + "/archive"

# Statuses an operation does not declare fall back to the spec's generic responses.
GENERIC = {400: "InvalidRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
           409: "Conflict", 415: "UnsupportedMediaType", 429: "TooManyRequests",
           500: "InternalError", 502: "BadGateway", 503: "ServiceNotAvailable"}
# 416 has no generic response in the spec; the error model of every other error is used.
GENERIC_SCHEMA = {416: "#/components/schemas/ApiErrorResponseModel"}

# What the walk must have covered: (label, status) pairs.
EXPECTED = {
    ("token", 200), ("token-bad-credential", 400), ("revoke", 200), ("message-list", 200),
    ("message-get-fax", 200), ("message-get-voicemail", 200), ("message-get-sms", 200),
    ("message-put", 200), ("message-fsync", 200), ("message-isync", 200),
    ("message-isync-bad-token", 400), ("call-log", 200), ("call-record", 200),
    ("recording", 200), ("fax-send", 200), ("fax-sent-get", 200), ("sms-send", 200),
    ("mms-send", 200), ("greeting-create", 200), ("fax-no-recipient", 400),
    ("fax-unsupported-type", 415), ("no-token", 401), ("revoked-token", 401),
    ("message-unknown", 404), ("content-range-past-end", 416), ("rate-limited", 429),
    ("phone-number-list", 200), ("fax-failed-get", 200), ("fax-send-throttled", 429),
    ("fax-send-unavailable", 503), ("wstoken", 200), ("call-log-by-telephony-session", 200),

    ("answering-rules", 200), ("answering-rules-simple", 200), ("answering-rule", 200),
    ("greeting-get", 200), ("greeting-presets", 200), ("greeting-preset", 200), ("report-create", 202), ("report-get", 200),
    ("report-archive", 200), ("report-third-task", 400), ("report-bad-type", 400),

    ("extension-list", 200), ("extension-get-other", 200), ("message-list-other", 200),
    ("message-sync-other", 200), ("authz-profile", 200), ("authz-check", 200),
    ("call-log-account", 200), ("call-record-account", 200), ("extension-unknown", 404),
    ("user-message-list-other", 403), ("user-call-log-account", 403), ("user-authz-profile", 200),
    ("call-log-sync-fsync", 200), ("call-log-sync-isync", 200), ("call-log-sync-no-count", 400),
}


# ----------------------------------------------------------------------------- spec


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    if not SPEC_PATH.is_file():
        missing(f"RingCentral OpenAPI spec not found at {SPEC_PATH}")
    try:
        import yaml
    except ImportError:
        missing("pyyaml is not installed (pip install -e '.[test]')")
    with SPEC_PATH.open("rb") as f:
        return yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _format_checker():
    from jsonschema import FormatChecker
    from openapi_schema_validator import oas30_format_checker

    checker = FormatChecker(formats=())
    checker.checkers = dict(oas30_format_checker.checkers)

    # Without the optional rfc3987 package `uri` is not checked at all; the emulator's
    # URIs must be absolute http(s) URLs, which is what clients follow verbatim (ws(s) for
    # the push gateway's address, WsTokenResponse.uri: production sends wss://…/ws).
    @checker.checks("uri")
    def is_uri(value: object) -> bool:
        if not isinstance(value, str):
            return True
        parts = urllib.parse.urlsplit(value)
        return parts.scheme in ("http", "https", "ws", "wss") and bool(parts.netloc)

    return checker


class Checker:
    """Finds the spec schema of an answer and validates bodies against it."""

    URN = "urn:rc-public-openapi"

    def __init__(self, spec: dict[str, Any]) -> None:
        from referencing import Registry, Resource
        from referencing.jsonschema import DRAFT4

        self.spec = spec
        self.registry = Registry().with_resource(
            self.URN, Resource.from_contents(spec, default_specification=DRAFT4))
        self.format_checker = _format_checker()

    def _deref(self, node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            node = spec_departures.resolve(self.spec, node["$ref"])
        return node

    def schema_ref(self, template: str, method: str, status: int) -> str | None:
        """JSON pointer (`#/...`) of the response schema, or None when the spec defines
        no JSON body for that answer. KeyError when the operation is not in the spec."""
        operation = self.spec["paths"][template][method.lower()]
        response = operation.get("responses", {}).get(str(status))
        if response is None:
            if status in GENERIC_SCHEMA:
                return GENERIC_SCHEMA[status]
            response = {"$ref": f"#/components/responses/{GENERIC[status]}"}
        pointer = None
        while "$ref" in response:
            pointer = response["$ref"]
            response = spec_departures.resolve(self.spec, pointer)
        content = response.get("content", {}).get("application/json")
        if content is None or "schema" not in content:
            return None
        schema = content["schema"]
        if "$ref" in schema:
            return schema["$ref"]
        if pointer is None:
            escaped = template.replace("~", "~0").replace("/", "~1")
            pointer = f"#/paths/{escaped}/{method.lower()}/responses/{status}"
        return pointer + "/content/application~1json/schema"

    def errors(self, template: str, method: str, status: int, body: Any) -> list[str]:
        """Validation problems of one answer (empty when it conforms)."""
        from openapi_schema_validator import OAS30Validator

        ref = self.schema_ref(template, method, status)
        if ref is None:
            return []
        validator = OAS30Validator({"$ref": self.URN + ref}, registry=self.registry,
                                   format_checker=self.format_checker)
        return [f"{'/'.join(map(str, e.absolute_path)) or '<body>'}: {e.message}"
                for e in validator.iter_errors(body)]


@dataclasses.dataclass
class Exchange:
    """One request of the walk and its answer."""

    label: str
    method: str
    template: str
    status: int
    content_type: str
    body: Any  # parsed JSON, or None for an empty body


# ----------------------------------------------------------------------------- the walk


class Walk:
    """Makes the requests and records the answers."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.exchanges: list[Exchange] = []
        self.http = httpx.Client(timeout=httpx.Timeout(15.0))
        self.token: str | None = None

    def close(self) -> None:
        self.http.close()

    def call(self, label: str, method: str, template: str, url: str, *, expect: int,
             auth: bool = True, **kw: Any) -> Any:
        headers = dict(kw.pop("headers", {}))
        if auth and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        r = self.http.request(method, url, headers=headers, **kw)
        assert r.status_code == expect, f"{label}: {r.status_code} {r.text[:500]}"
        ctype = r.headers.get("content-type", "")
        body = None
        if r.content:
            assert ctype.startswith("application/json"), f"{label}: content type {ctype}"
            body = r.json()
        self.exchanges.append(Exchange(label, method, template, r.status_code, ctype, body))
        return body

    def token_request(self, label: str, data: dict[str, str], expect: int) -> Any:
        s = self.server
        return self.call(label, "POST", T_TOKEN, s.platform + T_TOKEN, expect=expect, auth=False,
                         data=data,
                         headers={"Authorization": basic_auth(s.client_id, s.client_secret)})

    def run(self) -> list[Exchange]:
        s = self.server
        p = s.platform
        ext = p + "/restapi/v1.0/account/~/extension/~"
        jwt_grant = "urn:ietf:params:oauth:grant-type:jwt-bearer"
        self.token_request("token-bad-credential", {"grant_type": jwt_grant, "assertion": "nope"}, 400)
        self.token = self.token_request("token", {"grant_type": jwt_grant, "assertion": s.jwt},
                                        200)["access_token"]

        since = {"dateFrom": "2000-01-01T00:00:00.000Z"}
        page = self.call("message-list", "GET", T_LIST, ext + "/message-store", expect=200,
                         params={**since, "perPage": 1000})
        by_type: dict[str, dict] = {}
        for record in page["records"]:
            by_type.setdefault(record["type"], record)
        for mtype in ("Fax", "VoiceMail", "SMS"):
            assert mtype in by_type, f"the seeded account has no {mtype} message"
            self.call(f"message-get-{mtype.lower()}", "GET", T_MSG,
                      f"{ext}/message-store/{by_type[mtype]['id']}", expect=200)
        self.call("message-list", "GET", T_LIST, ext + "/message-store", expect=200,
                  params={**since, "perPage": 2, "page": 2})

        fsync = self.call("message-fsync", "GET", T_SYNC, ext + "/message-sync", expect=200,
                          params={"syncType": "FSync", **since})
        target = by_type["Fax"]
        new_status = "Unread" if target["readStatus"] == "Read" else "Read"
        self.call("message-put", "PUT", T_MSG, f"{ext}/message-store/{target['id']}", expect=200,
                  json={"readStatus": new_status})
        isync = self.call("message-isync", "GET", T_SYNC, ext + "/message-sync", expect=200,
                          params={"syncType": "ISync",
                                  "syncToken": fsync["syncInfo"]["syncToken"]})
        assert [r["id"] for r in isync["records"]] == [target["id"]]
        self.call("message-isync-bad-token", "GET", T_SYNC, ext + "/message-sync", expect=400,
                  params={"syncType": "ISync", "syncToken": "not-a-token"})

        calls = self.call("call-log", "GET", T_CALLLOG, ext + "/call-log", expect=200,
                          params={**since, "recordingType": "All", "perPage": 1000})
        call = calls["records"][0]
        self.call("call-record", "GET", T_CALL, f"{ext}/call-log/{call['id']}", expect=200)
        self.call("recording", "GET", T_RECORDING, call["recording"]["uri"], expect=200)
        # Push (gateway.py): the ws token (an empty body), and a recorded call found in the
        # call log by its telephony session once it has ended.
        self.call("wstoken", "POST", T_WSTOKEN, p + T_WSTOKEN, expect=200)
        placed = s.admin("POST", "/_emulator/calls/live", {"from": "+15551230003", "seconds": 31})
        found = self.call("call-log-by-telephony-session", "GET", T_CALLLOG, ext + "/call-log", expect=200,
                          params={"telephonySessionId": placed["telephonySessionId"], "recordingType": "All"})
        assert [r["recording"]["id"] for r in found["records"]] == [placed["recordingId"]]

        self.call("phone-number-list", "GET", T_PHONE_NUMBERS, ext + "/phone-number", expect=200)
        self.call("phone-number-list", "GET", T_PHONE_NUMBERS, ext + "/phone-number", expect=200,
                  params={"perPage": 2, "page": 2, "usageType": "DirectNumber"})
        self._company(p)
        self._sending(ext)
        self._rules_and_reports(p, ext)
        self._errors(ext, by_type)

        self.call("revoke", "POST", T_REVOKE, p + T_REVOKE, expect=200, auth=False,
                  data={"token": self.token},
                  headers={"Authorization": basic_auth(s.client_id, s.client_secret)})
        self.call("revoked-token", "GET", T_LIST, ext + "/message-store", expect=401)
        return self.exchanges

    def _company(self, p: str) -> None:
        acct = p + "/restapi/v1.0/account/~"
        since = {"dateFrom": "2000-01-01T00:00:00.000Z"}
        listing = self.call("extension-list", "GET", T_EXT_LIST, acct + "/extension", expect=200,
                            params={"perPage": 3, "page": 2})
        assert len(listing["records"]) == 3 and "previousPage" in listing["navigation"]
        self.call("extension-list", "GET", T_EXT_LIST, acct + "/extension", expect=200,
                  params={"status": ["Disabled", "Unassigned"], "type": "User"})
        everyone = self.call("extension-list", "GET", T_EXT_LIST, acct + "/extension", expect=200)
        other = next(e for e in everyone["records"] if e.get("extensionNumber") == "103")
        other_ext = f"{acct}/extension/{other['id']}"
        self.call("extension-get-other", "GET", EXT, other_ext, expect=200)
        self.call("message-list-other", "GET", T_LIST, other_ext + "/message-store", expect=200,
                  params={**since, "perPage": 1000})
        self.call("message-sync-other", "GET", T_SYNC, other_ext + "/message-sync", expect=200,
                  params={"syncType": "FSync", **since})
        self.call("authz-profile", "GET", T_AUTHZ, acct + "/extension/~/authz-profile", expect=200)
        self.call("authz-check", "GET", T_AUTHZ_CHECK, acct + "/extension/~/authz-profile/check",
                  expect=200, params={"permissionId": "ReadMessages", "targetExtensionId": other["id"]})
        company = self.call("call-log-account", "GET", T_ACCOUNT_CALLLOG, acct + "/call-log", expect=200,
                            params={**since, "recordingType": "All", "perPage": 1000})
        assert {r["extension"]["id"] for r in company["records"]} >= {other["id"]}
        self.call("call-record-account", "GET", T_ACCOUNT_CALL,
                  f"{acct}/call-log/{company['records'][-1]['id']}", expect=200)
        self.call("extension-unknown", "GET", T_LIST, acct + "/extension/1/message-store", expect=404)
        fsync = self.call("call-log-sync-fsync", "GET", T_ACCOUNT_CALLSYNC, acct + "/call-log-sync", expect=200,
                          params={"syncType": "FSync", "recordCount": 5})
        assert len(fsync["records"]) == 5
        added = self.server.admin("POST", "/_emulator/calls", {"extension": "103"})
        isync = self.call("call-log-sync-isync", "GET", T_ACCOUNT_CALLSYNC, acct + "/call-log-sync", expect=200,
                          params={"syncType": "ISync", "syncToken": fsync["syncInfo"]["syncToken"]})
        assert [r["id"] for r in isync["records"]] == [added["id"]]
        self.call("call-log-sync-no-count", "GET", T_ACCOUNT_CALLSYNC, acct + "/call-log-sync", expect=400,
                  params={"syncType": "FSync"})
        # The regular user: another mailbox and the company log are 403 CMN-408.
        admin_token, self.token = self.token, self.server.token(self.server.user_jwt)
        try:
            body = self.call("user-message-list-other", "GET", T_LIST, other_ext + "/message-store",
                             expect=403, params=since)
            assert body["errors"][0]["errorCode"] == "CMN-408" and body["permissionName"] == "ReadMessages"
            body = self.call("user-call-log-account", "GET", T_ACCOUNT_CALLLOG, acct + "/call-log",
                             expect=403, params=since)
            assert body["permissionName"] == "FullCompanyCallLog"
            self.call("user-authz-profile", "GET", T_AUTHZ, acct + "/extension/~/authz-profile", expect=200)
        finally:
            self.token = admin_token

    def _sending(self, ext: str) -> None:
        doc = media.fax_pdf(11, 2)
        fax = self.call("fax-send", "POST", T_FAX, ext + "/fax", expect=200,
                        data={"to": "+15551230001"},
                        files={"attachment": ("doc.pdf", doc.read(0, doc.size), "application/pdf")})
        number = fax["from"]["phoneNumber"]
        self.call("sms-send", "POST", T_SMS, ext + "/sms", expect=200,
                  json={"from": {"phoneNumber": number}, "to": [{"phoneNumber": "+15551230002"}],
                        "text": "conformance"})
        jpeg = media.image_jpeg(2)
        envelope = {"from": {"phoneNumber": number}, "to": [{"phoneNumber": "+15551230002"}],
                    "text": "picture"}
        self.call("mms-send", "POST", T_MMS, ext + "/mms", expect=200, files=[
            ("json", ("request.json", json.dumps(envelope), "application/json")),
            ("attachment", ("p.jpg", jpeg.read(0, jpeg.size), "image/jpeg"))])
        mp3 = media.audio_mp3(3, 2)
        self.call("greeting-create", "POST", T_GREETING, ext + "/greeting", expect=200,
                  data={"type": "Voicemail", "answeringRuleId": "business-hours-rule"},
                  files={"binary": ("g.mp3", mp3.read(0, mp3.size), "audio/mpeg")})
        self.call("fax-no-recipient", "POST", T_FAX, ext + "/fax", expect=400,
                  files={"attachment": ("doc.pdf", doc.read(0, doc.size), "application/pdf")})
        self.call("fax-unsupported-type", "POST", T_FAX, ext + "/fax", expect=415,
                  data={"to": "+15551230001"},
                  files={"attachment": ("x.pdf", b"\x7fELF\x02\x01\x01" + bytes(99),
                                        "application/pdf")})
        failing = self.call("fax-send", "POST", T_FAX, ext + "/fax", expect=200,
                            data={"to": ["+15551230001", "+15550000666"]},
                            files={"attachment": ("doc.pdf", doc.read(0, doc.size),
                                                  "application/pdf")})
        self.server.admin("POST", "/_emulator/config", {"faults": {"send_force_429": 1}})
        self.call("fax-send-throttled", "POST", T_FAX, ext + "/fax", expect=429,
                  data={"to": "+15551230001"}, files={"attachment": ("a.txt", b"x\n")})
        self.server.admin("POST", "/_emulator/config", {"faults": {"send_force_503": 1}})
        self.call("fax-send-unavailable", "POST", T_FAX, ext + "/fax", expect=503,
                  data={"to": "+15551230001"}, files={"attachment": ("a.txt", b"x\n")})
        deadline = time.monotonic() + 10
        while True:  # the failing fax was sent last: once it settled, both have
            failed = self.call("fax-failed-get", "GET", T_MSG,
                               f"{ext}/message-store/{failing['id']}", expect=200)
            if failed["messageStatus"] != "Queued" or time.monotonic() > deadline:
                break
            self.exchanges.pop()  # keep only the settled answer
            time.sleep(0.1)
        sent = self.call("fax-sent-get", "GET", T_MSG, f"{ext}/message-store/{fax['id']}",
                         expect=200)
        assert sent["messageStatus"] == "Sent" and sent["faxPageCount"] >= 2
        assert failed["messageStatus"] == "SendingFailed"
        assert [t.get("faxErrorCode") for t in failed["to"]] == [None, "NoAnswer"]

    def _rules_and_reports(self, p: str, ext: str) -> None:
        rules = self.call("answering-rules", "GET", T_RULES, ext + "/answering-rule", expect=200,
                          params={"view": "Detailed"})
        self.call("answering-rules-simple", "GET", T_RULES, ext + "/answering-rule", expect=200)
        custom = [g["custom"]["id"] for r in rules["records"] for g in r["greetings"] if "custom" in g]
        assert custom, "the seeded rules have no custom greeting"
        self.call("answering-rule", "GET", T_RULE, rules["records"][0]["uri"], expect=200)
        self.call("greeting-get", "GET", T_GREETING_GET, f"{ext}/greeting/{custom[0]}", expect=200)
        preset = next(g["preset"] for r in rules["records"] for g in r["greetings"] if "preset" in g)
        self.call("greeting-preset", "GET", T_PRESET, preset["uri"], expect=200)
        self.call("greeting-presets", "GET", T_PRESETS, p + T_PRESETS, expect=200)

        reports = p + "/restapi/v1.0/account/~/message-store-report"
        # A task that completes at once, then two that run for an hour: the third is refused
        # whatever the machine's speed.
        self.server.configure(report_delay=0)
        task = self.call("report-create", "POST", T_REPORT_CREATE, reports, expect=202,
                         json={"dateFrom": "2000-01-01T00:00:00Z", "messageTypes": ["Fax", "SMS"]})
        self.call("report-get", "GET", T_REPORT, task["uri"], expect=200)
        self.call("report-archive", "GET", T_REPORT_ARCHIVE, task["uri"] + "/archive", expect=200)
        self.server.configure(report_delay=3600)
        running = self.call("report-create", "POST", T_REPORT_CREATE, reports, expect=202, json={})
        self.call("report-get", "GET", T_REPORT, running["uri"], expect=200)
        self.call("report-create", "POST", T_REPORT_CREATE, reports, expect=202, json={})
        self.call("report-third-task", "POST", T_REPORT_CREATE, reports, expect=400, json={})
        self.call("report-bad-type", "POST", T_REPORT_CREATE, reports, expect=400,
                  json={"messageTypes": ["Email"]})

    def _errors(self, ext: str, by_type: dict[str, dict]) -> None:
        self.call("no-token", "GET", T_LIST, ext + "/message-store", expect=401, auth=False)
        self.call("message-unknown", "GET", T_MSG, ext + "/message-store/1", expect=404)
        att = by_type["Fax"]["attachments"][0]
        self.call("content-range-past-end", "GET", T_CONTENT, att["uri"], expect=416,
                  headers={"Range": "bytes=999999999-"})
        self.server.admin("POST", "/_emulator/config", {"faults": {"force_429": 1}})
        self.call("rate-limited", "GET", T_LIST, ext + "/message-store", expect=429,
                  params={"dateFrom": "2000-01-01T00:00:00.000Z"})


@pytest.fixture(scope="module")
def openapi_server(tmp_path_factory):
    """One emulator subprocess for the whole walk (conftest's fixtures are per test)."""
    srv = spawn_emulator(tmp_path_factory.mktemp("openapi"), send_delay=0.2, limit_heavy=100)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def exchanges(spec, openapi_server) -> list[Exchange]:
    walk = Walk(openapi_server)
    try:
        return walk.run()
    finally:
        walk.close()


# ----------------------------------------------------------------------------- tests


def _problems(checker: Checker, exchanges: list[Exchange]) -> list[str]:
    out = []
    for ex in exchanges:
        for err in checker.errors(ex.template, ex.method, ex.status, ex.body):
            out.append(f"{ex.label} ({ex.method} {ex.status}): {err}")
    return out


def test_walk_covers_every_implemented_operation(spec, exchanges):
    seen = {(ex.label, ex.status) for ex in exchanges}
    assert EXPECTED <= seen, f"not covered: {sorted(EXPECTED - seen)}"
    checker = Checker(spec)
    for ex in exchanges:
        assert ex.template in spec["paths"], ex.template
        assert ex.method.lower() in spec["paths"][ex.template], (ex.method, ex.template)
        if ex.body is not None:
            # Every JSON answer has a schema to meet, except where the spec gives none.
            assert checker.schema_ref(ex.template, ex.method, ex.status) is not None, ex.label


def test_every_answer_conforms_to_the_spec(spec, exchanges):
    problems = _problems(Checker(spec_departures.patched(spec)), exchanges)
    assert not problems, "\n".join(problems)


def test_every_departure_is_still_needed(spec, exchanges):
    for departure in DEPARTURES:
        if departure.kind == "unspecified":
            continue  # not a schema: test_unspecified_departures_are_pinned_by_a_test
        others = [d for d in DEPARTURES if d is not departure]
        problems = _problems(Checker(spec_departures.patched(spec, others)), exchanges)
        assert problems, f"departure no longer needed, remove it: {departure}"


def test_unspecified_departures_are_pinned_by_a_test():
    root = Path(__file__).resolve().parent.parent
    for departure in DEPARTURES:
        if departure.kind != "unspecified":
            continue
        path, _, name = departure.test.partition("::")
        assert name and f"def {name}(" in (root / path).read_text(), departure


def test_departures_relax_exactly_their_field(spec):
    body = {"records": [], "paging": {}}  # GetMessageList requires navigation too
    relax = Departure(pointer="#/components/schemas/GetMessageList", field="navigation",
                      spec_says="required", emulator_does="omits", reason="test")
    strict = Checker(spec).errors(T_LIST, "GET", 200, body)
    assert strict and "navigation" in strict[0]
    relaxed = Checker(spec_departures.patched(spec, [relax]))
    assert relaxed.errors(T_LIST, "GET", 200, body) == []
    assert relaxed.errors(T_LIST, "GET", 200, {"records": [], "navigation": {}})  # paging still
    with pytest.raises(LookupError):
        Departure(pointer="#/components/schemas/GetMessageList", field="uri",
                  spec_says="", emulator_does="", reason="").apply(spec_departures.patched(spec, []))


def test_checker_catches_wrong_types_and_formats(spec):
    checker = Checker(spec)
    recording = {"id": "1", "contentUri": "/relative/path", "contentType": "audio/mpeg",
                 "duration": 3}
    problems = checker.errors(T_RECORDING, "GET", 200, recording)
    assert any("uri" in p for p in problems)
    recording.update(contentUri="http://127.0.0.1:1/x", duration="3")
    assert any("integer" in p for p in checker.errors(T_RECORDING, "GET", 200, recording))
    recording.update(duration=3)
    assert checker.errors(T_RECORDING, "GET", 200, recording) == []
    assert checker.errors(T_MSG, "GET", 404, {"errors": []})  # minItems 1
    assert checker.schema_ref(T_REVOKE, "POST", 200) is None
