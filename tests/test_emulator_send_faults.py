"""What a sender meets in production, over real loopback HTTP against an emulator
subprocess: the phone-number list with features, the SMS/MMS sender checks, outbound
messages leaving Queued (GET, list and sync), the general fault switches on send POSTs,
and the send-only switches (503, 429, an answer dropped after the message was stored,
a delayed answer).

Switches are set the way client tests set them: `srv.configure(faults={...})`
(`POST /_emulator/config`).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import time

import httpx
import pytest

import mime_samples
from mime_samples import jpeg, pdf

EXT = "/restapi/v1.0/account/~/extension/~"
FAILING = "+15550000666"
OK_NUMBER = "+14155550123"
MAIN = "+16505550100"  # the demo extension's primary number (seed default)
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


class Client:
    """A logged-in httpx client on the emulator subprocess."""

    def __init__(self, srv) -> None:
        self.srv = srv
        self.http = httpx.Client(base_url=srv.platform + EXT, timeout=15,
                                 headers={"Authorization": f"Bearer {srv.token()}"})
        # The seeded account has outbound messages of its own: only new ones count.
        self.seeded = {m["id"] for m in srv.admin("GET", "/_emulator/sent")["messages"]}

    def close(self) -> None:
        self.http.close()

    def fax(self, to: list[str], doc: bytes, name: str = "doc.pdf") -> httpx.Response:
        return self.http.post("/fax", data={"to": to},
                              files={"attachment": (name, doc, "application/pdf")})

    def mms(self, sender: str, to: str, files: list[tuple[str, bytes, str]], text: str = "hi"):
        envelope = {"from": {"phoneNumber": sender}, "to": [{"phoneNumber": to}], "text": text}
        parts = [("json", ("request.json", json.dumps(envelope), "application/json"))]
        parts += [("attachment", f) for f in files]
        return self.http.post("/mms", files=parts)

    def sms(self, sender: str, to: str, text: str = "hello") -> httpx.Response:
        return self.http.post("/sms", json={"from": {"phoneNumber": sender},
                                            "to": [{"phoneNumber": to}], "text": text})

    def sent(self) -> list[dict]:
        """Outbound messages stored since this client started (admin report)."""
        return [m for m in self.srv.admin("GET", "/_emulator/sent")["messages"]
                if m["id"] not in self.seeded]


@pytest.fixture
def srv(start_emulator):
    return start_emulator(send_delay=0, rate_limits=False, scale="demo")


@pytest.fixture
def client(srv):
    c = Client(srv)
    try:
        yield c
    finally:
        c.close()


def error_code(r: httpx.Response) -> str:
    return r.json()["errors"][0]["errorCode"]


# ----------------------------------------------------------------------------- numbers


def test_phone_number_list_carries_features_and_pages(client):
    r = client.http.get("/phone-number")
    assert r.status_code == 200, r.text
    assert r.headers["X-Rate-Limit-Group"] == "light"
    body = r.json()
    records = body["records"]
    assert body["paging"]["totalElements"] == len(records) == 5
    primary = [n for n in records if n["primary"]]
    me = client.http.get(client.srv.platform + "/restapi/v1.0/account/~").json()["mainNumber"]
    assert len(primary) == 1 and primary[0]["phoneNumber"] == me
    assert {"SmsSender", "MmsSender", "CallerId"} <= set(primary[0]["features"])
    mms_senders = [n["phoneNumber"] for n in records if "MmsSender" in n["features"]]
    sms_only = [n["phoneNumber"] for n in records
                if "SmsSender" in n["features"] and "MmsSender" not in n["features"]]
    assert len(mms_senders) == 2 and len(sms_only) == 1
    assert all(n["uri"].startswith(client.srv.platform) and n["id"] for n in records)

    page2 = client.http.get("/phone-number", params={"perPage": 2, "page": 2}).json()
    assert page2["paging"] == {"page": 2, "perPage": 2, "pageStart": 2, "pageEnd": 3,
                               "totalPages": 3, "totalElements": 5}
    assert [n["id"] for n in page2["records"]] == [n["id"] for n in records[2:4]]
    assert set(page2["navigation"]) == {"firstPage", "nextPage", "previousPage", "lastPage"}
    nxt = client.http.get(page2["navigation"]["nextPage"]["uri"]).json()
    assert [n["id"] for n in nxt["records"]] == [records[4]["id"]]

    fax_numbers = client.http.get("/phone-number", params={"usageType": "CompanyFaxNumber"}).json()
    assert [(n["type"], n["features"]) for n in fax_numbers["records"]] == [("FaxOnly", [])]
    direct = client.http.get("/phone-number", params=[("usageType", "DirectNumber")]).json()
    assert len(direct["records"]) == 3
    assert client.http.get("/phone-number", params={"usageType": "Nope"}).status_code == 400
    assert client.http.get("/phone-number", params={"status": "Weird"}).status_code == 400
    assert client.http.get("/phone-number", params={"status": "Normal"}).json()[
        "paging"]["totalElements"] == 5


def test_sms_and_mms_senders_need_their_feature(client):
    records = client.http.get("/phone-number").json()["records"]
    by_label = {n.get("label", "primary"): n["phoneNumber"] for n in records}
    picture = [("p.jpg", jpeg(), "image/jpeg")]
    assert client.mms(by_label["Sales"], OK_NUMBER, picture).status_code == 200
    assert client.sms(by_label["Support"], OK_NUMBER).status_code == 200
    r = client.mms(by_label["Support"], OK_NUMBER, picture)
    assert (r.status_code, error_code(r)) == (403, "MSG-242")
    r = client.sms(by_label["Fax"], OK_NUMBER)
    assert (r.status_code, error_code(r)) == (403, "MSG-241")
    toll_free = next(n["phoneNumber"] for n in records if n["paymentType"] == "TollFree")
    r = client.sms(toll_free, OK_NUMBER)
    assert (r.status_code, error_code(r)) == (403, "MSG-242")
    r = client.sms("+12125550000", OK_NUMBER)
    assert (r.status_code, error_code(r)) == (400, "MSG-245")
    assert [m["from"] for m in client.sent()] == [by_label["Sales"], by_label["Support"]]


# ----------------------------------------------------------------------------- transitions


def test_outbound_fax_leaves_queued_in_get_list_and_sync(client):
    fsync = client.http.get("/message-sync", params={"syncType": "FSync", "messageType": "Fax",
                                                     "direction": "Outbound"}).json()
    doc = pdf()
    r = client.fax([OK_NUMBER, FAILING], doc)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["messageStatus"] == "Queued"
    assert [t["messageStatus"] for t in answer["to"]] == ["Queued", "Queued"]
    assert all("faxErrorCode" not in t for t in answer["to"])
    good = client.fax([OK_NUMBER], doc).json()

    # send_delay=0: due at once, settled by the next request that reads messages.
    failed = client.http.get(f"/message-store/{answer['id']}").json()
    assert failed["messageStatus"] == "SendingFailed"
    assert failed["to"] == [
        {"phoneNumber": OK_NUMBER, "messageStatus": "Sent"},
        {"phoneNumber": FAILING, "messageStatus": "SendingFailed", "faxErrorCode": "NoAnswer"}]
    listed = client.http.get("/message-store", params={"messageType": "Fax",
                                                       "direction": "Outbound"}).json()
    by_id = {m["id"]: m for m in listed["records"]}
    assert by_id[answer["id"]]["messageStatus"] == "SendingFailed"
    assert by_id[good["id"]]["messageStatus"] == "Sent"
    assert by_id[good["id"]]["faxPageCount"] >= 2
    isync = client.http.get("/message-sync", params={
        "syncType": "ISync", "syncToken": fsync["syncInfo"]["syncToken"]}).json()
    changes = {m["id"]: m["messageStatus"] for m in isync["records"]}
    assert changes == {answer["id"]: "SendingFailed", good["id"]: "Sent"}


def test_sms_to_a_failing_number_fails_for_that_recipient(client):
    me = client.http.get("/phone-number").json()["records"][0]["phoneNumber"]
    r = client.http.post("/sms", json={"from": {"phoneNumber": me},
                                       "to": [{"phoneNumber": FAILING}], "text": "x"})
    assert r.status_code == 200
    msg = client.http.get(f"/message-store/{r.json()['id']}").json()
    assert msg["messageStatus"] == "SendingFailed"
    assert msg["to"] == [{"phoneNumber": FAILING, "messageStatus": "SendingFailed"}]


def test_fax_attachments_are_judged_by_content(client):
    r = client.http.post("/fax", data={"to": OK_NUMBER}, files={
        "attachment": ("letter.docx", mime_samples.zip_archive(), DOCX)})
    assert (r.status_code, error_code(r)) == (415, "MSG-348")
    r = client.http.post("/fax", data={"to": OK_NUMBER}, files={
        "attachment": ("scan.pdf", mime_samples.mp4(), "application/pdf")})
    assert (r.status_code, error_code(r)) == (415, "MSG-348")
    r = client.http.post("/fax", data={"to": OK_NUMBER}, files={
        "attachment": ("letter.docx", mime_samples.ooxml("docx"), DOCX)})
    assert r.status_code == 200, r.text
    assert r.json()["attachments"][0]["contentType"] == DOCX
    assert len(client.sent()) == 1


# ----------------------------------------------------------------------------- general faults


def test_force_429_and_error_rate_hit_send_posts(client, srv):
    srv.configure(faults={"force_429": 1})
    r = client.fax([OK_NUMBER], pdf())
    assert (r.status_code, error_code(r)) == (429, "CMN-301")
    assert int(r.headers["Retry-After"]) >= 1
    srv.configure(faults={"error_rate": 1.0})
    r = client.sms(MAIN, OK_NUMBER)
    assert (r.status_code, error_code(r)) == (503, "CMN-201")
    srv.configure(faults={"error_rate": 0.0})
    assert client.sent() == []
    assert client.fax([OK_NUMBER], pdf()).status_code == 200
    assert len(client.sent()) == 1


# ----------------------------------------------------------------------------- send-only faults


def test_send_force_503_refuses_only_send_posts(client, srv):
    settings = srv.configure(faults={"send_force_503": 2})
    assert settings["faults"]["send_force_503"] == 2
    assert client.http.get("/message-store").status_code == 200  # reads are untouched
    for _ in range(2):
        r = client.fax([OK_NUMBER], pdf())
        assert (r.status_code, error_code(r)) == (503, "CMN-201")
    assert client.sent() == []
    assert client.fax([OK_NUMBER], pdf()).status_code == 200
    stats = srv.stats()
    assert stats["faults"]["send-503"] == 2
    assert stats["requests"]["fax-send"] == 3
    assert srv.admin("GET", "/_emulator/config")["faults"]["send_force_503"] == 0


def test_send_force_429_has_retry_after_and_the_groups_headers(client, srv):
    srv.configure(faults={"send_force_429": 2}, window=30)
    r = client.fax([OK_NUMBER], pdf())
    assert (r.status_code, error_code(r)) == (429, "CMN-301")
    assert r.headers["Retry-After"] == "30"
    assert (r.headers["X-Rate-Limit-Group"], r.headers["X-Rate-Limit-Remaining"]) == ("heavy", "0")
    r = client.mms(MAIN, OK_NUMBER, [("p.jpg", jpeg(), "image/jpeg")])
    assert r.status_code == 429 and r.headers["X-Rate-Limit-Group"] == "medium"
    assert client.sent() == []
    assert client.http.get("/message-store").status_code == 200
    assert client.fax([OK_NUMBER], pdf()).status_code == 200


def test_send_drop_answer_stores_the_message_but_the_client_gets_no_answer(client, srv):
    srv.configure(faults={"send_drop_answer": 1})
    doc = pdf()
    before = time.time()
    with pytest.raises(httpx.TransportError):
        client.fax([OK_NUMBER], doc, name="contract.pdf")
    stored = client.sent()
    assert len(stored) == 1
    assert stored[0]["to"][0]["phoneNumber"] == OK_NUMBER
    assert stored[0]["attachments"][0]["sha256"] == hashlib.sha256(doc).hexdigest()
    assert stored[0]["attachments"][0]["fileName"] == "contract.pdf"
    # What a reconciling client finds: an outbound fax to that number with that size.
    found = client.http.get("/message-store", params={
        "messageType": "Fax", "direction": "Outbound", "phoneNumber": OK_NUMBER}).json()
    assert [m["id"] for m in found["records"]] == [stored[0]["id"]]
    assert found["records"][0]["attachments"][0]["size"] == len(doc)
    assert found["records"][0]["creationTime"] >= time.strftime(
        "%Y-%m-%dT%H:%M:%S", time.gmtime(before - 1))
    assert srv.stats()["faults"]["send-drop"] == 1
    # Only the next one: the following send is answered.
    r = client.fax([OK_NUMBER], doc)
    assert r.status_code == 200 and r.json()["id"] != stored[0]["id"]


def test_send_drop_answer_applies_to_mms_too(client, srv):
    srv.configure(faults={"send_drop_answer": 1})
    with pytest.raises(httpx.TransportError):
        client.mms(MAIN, OK_NUMBER, [("p.jpg", jpeg(), "image/jpeg")])
    assert [m["type"] for m in client.sent()] == ["SMS"]


def test_send_answer_delay_holds_the_answer_after_storing(client, srv):
    srv.configure(faults={"send_answer_delay_ms": 4000})
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(client.fax, [OK_NUMBER], pdf())
        deadline = time.monotonic() + 15
        while not client.sent() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.sent(), "the message was never stored"
        assert not future.done()  # stored, still unanswered
        r = future.result(timeout=20)
    assert r.status_code == 200 and r.json()["id"] == client.sent()[0]["id"]


def test_send_switches_are_validated(srv):
    r = httpx.post(srv.platform + "/_emulator/config", json={"faults": {"send_drop_answer": -1}},
                   timeout=10)
    assert r.status_code == 400
    r = httpx.post(srv.platform + "/_emulator/config", json={"faults": {"send_drop": 1}},
                   timeout=10)
    assert r.status_code == 400


def test_send_switches_as_command_line_flags(start_emulator):
    srv = start_emulator(send_delay=0, faults={"send_force_503": 1, "send_drop_answer": 1})
    faults = srv.admin("GET", "/_emulator/config")["faults"]
    assert (faults["send_force_503"], faults["send_drop_answer"]) == (1, 1)
    c = Client(srv)
    try:
        assert c.fax([OK_NUMBER], pdf()).status_code == 503
        with pytest.raises(httpx.TransportError):
            c.fax([OK_NUMBER], pdf())
        assert c.fax([OK_NUMBER], pdf()).status_code == 200
        assert len(c.sent()) == 2
    finally:
        c.close()
