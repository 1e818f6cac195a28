"""boto3 and raw-HTTP checks of `rampart gateway`, driven by tests/gateway_cli.rs.

Usage: python s3_clients.py ENDPOINT STEP
Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY. Every check raises
(non-zero exit, message on stderr) when the gateway answers anything but what an S3
client expects.
"""
import base64
import concurrent.futures
import datetime
import hashlib
import http.client
import os
import sys
import time
import urllib.parse
import zlib

import boto3
import botocore
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

ENDPOINT = sys.argv[1]
STEP = sys.argv[2]
REGION = "us-east-1"
# User metadata that no cloud may hold in the clear (the Rust test searches for it).
META_MARKER = "RAMPART-USER-METADATA-MARKER-9c2f"
CFG = Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"})


def client(secret=None, key_id=None):
    return boto3.client(
        "s3",
        endpoint_url=ENDPOINT,
        region_name=REGION,
        aws_access_key_id=key_id or os.environ["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=secret or os.environ["AWS_SECRET_ACCESS_KEY"],
        config=CFG,
    )


def expect_error(code, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except ClientError as e:
        got = e.response["Error"]["Code"]
        assert got == code, f"{fn.__name__}: expected {code}, got {got}: {e}"
        return e
    raise AssertionError(f"{fn.__name__}: expected {code}, but it succeeded")


def raw(method, path, body=b"", headers=None, sign=True, query="", payload_hash=None, unsigned=None):
    """Sends one request; signs it with SigV4 (payload hash included, or `payload_hash`
    if given) unless sign=False; `unsigned` headers are added after signing."""
    return raw_full(method, path, body, headers, sign, query, payload_hash, unsigned)[:2]


def raw_full(method, path, body=b"", headers=None, sign=True, query="", payload_hash=None, unsigned=None):
    """`raw`, returning (status, body text, response headers)."""
    url = f"{ENDPOINT}{path}" + (f"?{query}" if query else "")
    headers = dict(headers or {})
    if sign:
        creds = Credentials(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])
        req = AWSRequest(method=method, url=url, data=body, headers=headers)
        req.headers["x-amz-content-sha256"] = payload_hash or hashlib.sha256(body).hexdigest()
        SigV4Auth(creds, "s3", REGION).add_auth(req)
        headers = dict(req.headers.items())
    headers.update(unsigned or {})
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    conn.request(method, u.path + (f"?{u.query}" if u.query else ""), body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data.decode("utf-8", "replace"), dict(resp.getheaders())


def paginate():
    s3 = client()
    s3.create_bucket(Bucket="many")
    keys = [f"k/{i:05d}" for i in range(1100)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket="many", Key=k, Body=k.encode()), keys))
    # v2 with the default page size (1000): two pages.
    pages = list(s3.get_paginator("list_objects_v2").paginate(Bucket="many"))
    assert len(pages) == 2, f"v2: {len(pages)} pages"
    assert pages[0]["IsTruncated"] and pages[0]["KeyCount"] == 1000, pages[0]["KeyCount"]
    got = [o["Key"] for p in pages for o in p.get("Contents", [])]
    assert got == keys, "v2 pages do not list every key exactly once, in order"
    # v1 with markers, 400 keys a page: three pages.
    pages = list(s3.get_paginator("list_objects").paginate(Bucket="many", PaginationConfig={"PageSize": 400}))
    assert len(pages) == 3, f"v1: {len(pages)} pages"
    got = [o["Key"] for p in pages for o in p.get("Contents", [])]
    assert got == keys, "v1 pages do not list every key exactly once, in order"
    # Delimiter and prefix.
    r = s3.list_objects_v2(Bucket="many", Delimiter="/")
    assert [p["Prefix"] for p in r.get("CommonPrefixes", [])] == ["k/"], r
    r = s3.list_objects_v2(Bucket="many", Prefix="k/0109")
    assert [o["Key"] for o in r["Contents"]] == [f"k/0109{i}" for i in range(10)], r
    # One object's bytes and ETag (MD5 for a single PUT).
    o = s3.get_object(Bucket="many", Key="k/01099")
    assert o["Body"].read() == b"k/01099"
    assert o["ETag"] == '"%s"' % hashlib.md5(b"k/01099").hexdigest(), o["ETag"]
    # Deletes: batches of at most 1000, then the bucket.
    for i in range(0, len(keys), 1000):
        r = s3.delete_objects(Bucket="many", Delete={"Objects": [{"Key": k} for k in keys[i : i + 1000]]})
        assert len(r.get("Deleted", [])) == len(keys[i : i + 1000]) and not r.get("Errors"), r
    assert s3.list_objects_v2(Bucket="many")["KeyCount"] == 0
    s3.delete_bucket(Bucket="many")
    expect_error("404", s3.head_bucket, Bucket="many")
    print("paginate ok")


def metadata():
    s3 = client()
    s3.put_object(Bucket="data", Key="meta.txt", Body=b"hello", ContentType="text/x-rampart",
                  Metadata={"Color": "blue", "Note": META_MARKER}, CacheControl="no-cache")
    h = s3.head_object(Bucket="data", Key="meta.txt")
    assert h["ContentType"] == "text/x-rampart", h
    assert h["Metadata"] == {"color": "blue", "note": META_MARKER}, h
    assert h["CacheControl"] == "no-cache", h
    assert h["ETag"] == '"%s"' % hashlib.md5(b"hello").hexdigest(), h
    c = s3.copy_object(Bucket="data", Key="meta-copy.txt", CopySource="data/meta.txt")
    assert c["CopyObjectResult"]["ETag"] == h["ETag"]
    h2 = s3.head_object(Bucket="data", Key="meta-copy.txt")
    assert h2["Metadata"] == {"color": "blue", "note": META_MARKER} and h2["ContentType"] == "text/x-rampart", h2
    assert s3.get_object(Bucket="data", Key="meta-copy.txt")["Body"].read() == b"hello"
    # A presigned (query-string SigV4) URL works without credentials; a tampered one fails.
    signer = boto3.client("s3", endpoint_url=ENDPOINT, region_name=REGION,
                          config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))
    url = signer.generate_presigned_url("get_object", Params={"Bucket": "data", "Key": "meta.txt"}, ExpiresIn=300)
    assert "X-Amz-Signature=" in url, url
    u = urllib.parse.urlsplit(url)
    status, body = raw("GET", u.path, sign=False, query=u.query)
    assert status == 200 and body == "hello", (status, body)
    sig = urllib.parse.parse_qs(u.query)["X-Amz-Signature"][0]
    bad_sig = u.query.replace(sig, sig[:-1] + ("0" if sig[-1] != "0" else "1"))
    status, body = raw("GET", u.path, sign=False, query=bad_sig)
    assert status == 403 and "SignatureDoesNotMatch" in body, (status, body)
    expect_error("304", s3.get_object, Bucket="data", Key="meta.txt", IfNoneMatch=h["ETag"])
    expect_error("PreconditionFailed", s3.get_object, Bucket="data", Key="meta.txt", IfMatch='"00"')
    # If-Modified-Since / If-Unmodified-Since (issue 12: they were ignored), with If-Match
    # taking precedence over If-Unmodified-Since as in RFC 9110 and S3.
    past = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
    future = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)
    assert s3.get_object(Bucket="data", Key="meta.txt", IfModifiedSince=past)["Body"].read() == b"hello"
    expect_error("304", s3.get_object, Bucket="data", Key="meta.txt", IfModifiedSince=future)
    expect_error("304", s3.head_object, Bucket="data", Key="meta.txt", IfModifiedSince=future)
    expect_error("PreconditionFailed", s3.get_object, Bucket="data", Key="meta.txt", IfUnmodifiedSince=past)
    expect_error("412", s3.head_object, Bucket="data", Key="meta.txt", IfUnmodifiedSince=past)
    assert s3.get_object(Bucket="data", Key="meta.txt", IfUnmodifiedSince=future)["Body"].read() == b"hello"
    assert s3.get_object(Bucket="data", Key="meta.txt", IfMatch=h["ETag"], IfUnmodifiedSince=past)["Body"].read() == b"hello"
    expect_error("PreconditionFailed", s3.copy_object, Bucket="data", Key="meta-copy2.txt",
                 CopySource="data/meta.txt", CopySourceIfUnmodifiedSince=past)
    for k in ["meta.txt", "meta-copy.txt"]:
        s3.delete_object(Bucket="data", Key=k)
        expect_error("404", s3.head_object, Bucket="data", Key=k)
    print("metadata ok")


def bad_input():
    s3 = client()
    s3.create_bucket(Bucket="bad")
    s3.put_object(Bucket="bad", Key="keep", Body=b"old bytes")
    # Authentication.
    expect_error("SignatureDoesNotMatch", client(secret="x" * 40).list_buckets)
    expect_error("InvalidAccessKeyId", client(key_id="NOSUCHKEY0000000").list_buckets)
    status, body = raw("GET", "/", sign=False)
    assert status == 403 and "<Code>AccessDenied</Code>" in body, (status, body)
    status, body = raw("GET", "/bad/keep", sign=False)
    assert status == 403 and "<Code>AccessDenied</Code>" in body, (status, body)
    # Unknown bucket and key.
    expect_error("NoSuchBucket", s3.list_objects_v2, Bucket="nosuchbucket")
    expect_error("NoSuchBucket", s3.put_object, Bucket="nosuchbucket", Key="k", Body=b"x")
    expect_error("NoSuchBucket", s3.get_object, Bucket="nosuchbucket", Key="k")
    expect_error("NoSuchKey", s3.get_object, Bucket="bad", Key="nosuchkey")
    expect_error("InvalidRange", s3.get_object, Bucket="bad", Key="keep", Range="bytes=100-200")
    expect_error("BucketNotEmpty", s3.delete_bucket, Bucket="bad")
    expect_error("BucketAlreadyOwnedByYou", s3.create_bucket, Bucket="bad",
                 CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    # A wrong Content-MD5: refused, nothing stored.
    expect_error("BadDigest", s3.put_object, Bucket="bad", Key="md5", Body=b"abc",
                 ContentMD5="1B2M2Y8AsgTpgAmY7PhCfg==")
    expect_error("404", s3.head_object, Bucket="bad", Key="md5")
    # Too large: a single PUT and a part over the configured 6 MiB limit.
    big = os.urandom(7 * 1024 * 1024)
    expect_error("EntityTooLarge", s3.put_object, Bucket="bad", Key="big", Body=big)
    expect_error("404", s3.head_object, Bucket="bad", Key="big")
    up = s3.create_multipart_upload(Bucket="bad", Key="mp")["UploadId"]
    expect_error("EntityTooLarge", s3.upload_part, Bucket="bad", Key="mp", UploadId=up, PartNumber=1, Body=big)
    assert s3.list_parts(Bucket="bad", Key="mp", UploadId=up).get("Parts", []) == []
    expect_error("InvalidArgument", s3.upload_part, Bucket="bad", Key="mp", UploadId=up, PartNumber=0, Body=b"x")
    # Malformed XML bodies.
    status, body = raw("POST", "/bad/mp", body=b"<CompleteMultipartUpload><Part>", query=f"uploadId={up}")
    assert status == 400 and "<Code>MalformedXML</Code>" in body, (status, body)
    status, body = raw("POST", "/bad", body=b"not xml at all", query="delete",
                       headers={"Content-MD5": "", "Content-Type": "application/xml"})
    assert status == 400 and ("MalformedXML" in body or "InvalidRequest" in body or "MissingContentMD5" in body), (status, body)
    # Completing with parts that were never uploaded, or out of order.
    p1 = s3.upload_part(Bucket="bad", Key="mp", UploadId=up, PartNumber=1, Body=b"a" * (5 * 1024 * 1024))
    p2 = s3.upload_part(Bucket="bad", Key="mp", UploadId=up, PartNumber=2, Body=b"tail")
    parts = [{"PartNumber": 1, "ETag": p1["ETag"]}, {"PartNumber": 2, "ETag": p2["ETag"]}]
    expect_error("InvalidPart", s3.complete_multipart_upload, Bucket="bad", Key="mp", UploadId=up,
                 MultipartUpload={"Parts": [parts[0], {"PartNumber": 3, "ETag": p2["ETag"]}]})
    expect_error("InvalidPart", s3.complete_multipart_upload, Bucket="bad", Key="mp", UploadId=up,
                 MultipartUpload={"Parts": [parts[0], {"PartNumber": 2, "ETag": p1["ETag"]}]})
    expect_error("EntityTooSmall", s3.complete_multipart_upload, Bucket="bad", Key="mp", UploadId=up,
                 MultipartUpload={"Parts": [parts[1], {"PartNumber": 3, "ETag": p2["ETag"]}]})
    expect_error("InvalidPartOrder", s3.complete_multipart_upload, Bucket="bad", Key="mp", UploadId=up,
                 MultipartUpload={"Parts": list(reversed(parts))})
    lp = s3.list_parts(Bucket="bad", Key="mp", UploadId=up)
    assert [(p["PartNumber"], p["Size"]) for p in lp["Parts"]] == [(1, 5 * 1024 * 1024), (2, 4)], lp
    # An aborted upload: gone, and its object never appears.
    s3.abort_multipart_upload(Bucket="bad", Key="mp", UploadId=up)
    expect_error("NoSuchUpload", s3.list_parts, Bucket="bad", Key="mp", UploadId=up)
    expect_error("NoSuchUpload", s3.complete_multipart_upload, Bucket="bad", Key="mp", UploadId=up,
                 MultipartUpload={"Parts": parts})
    expect_error("404", s3.head_object, Bucket="bad", Key="mp")
    # A completed small multipart upload: exact bytes and an S3 multipart ETag.
    up = s3.create_multipart_upload(Bucket="bad", Key="mp2")["UploadId"]
    p1 = s3.upload_part(Bucket="bad", Key="mp2", UploadId=up, PartNumber=1, Body=b"a" * (5 * 1024 * 1024))
    p2 = s3.upload_part(Bucket="bad", Key="mp2", UploadId=up, PartNumber=2, Body=b"tail")
    r = s3.complete_multipart_upload(Bucket="bad", Key="mp2", UploadId=up, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": p1["ETag"]}, {"PartNumber": 2, "ETag": p2["ETag"]}]})
    want = hashlib.md5(bytes.fromhex(p1["ETag"].strip('"')) + bytes.fromhex(p2["ETag"].strip('"'))).hexdigest() + "-2"
    assert r["ETag"] == f'"{want}"', r
    assert s3.get_object(Bucket="bad", Key="mp2")["Body"].read() == b"a" * (5 * 1024 * 1024) + b"tail"
    expect_error("NoSuchUpload", s3.list_parts, Bucket="bad", Key="mp2", UploadId=up)
    # A body that does not match its signed SHA-256: refused, the old version stays.
    status, body = raw("PUT", "/bad/keep", body=b"tampered", payload_hash=hashlib.sha256(b"other").hexdigest())
    assert status == 400 and "XAmzContentSHA256Mismatch" in body, (status, body)
    # A client that disconnects mid-body: the old version stays, exactly.
    disconnect_mid_put("/bad/keep")
    assert s3.get_object(Bucket="bad", Key="keep")["Body"].read() == b"old bytes"
    # A client that hangs up mid-download: the gateway keeps serving exact bytes.
    five = os.urandom(5 * 1024 * 1024)
    s3.put_object(Bucket="bad", Key="five", Body=five)
    disconnect_mid_get("/bad/five")
    assert s3.get_object(Bucket="bad", Key="five")["Body"].read() == five
    s3.delete_object(Bucket="bad", Key="five")
    print("bad input ok")


def disconnect_mid_put(path):
    """Announces 5 MiB (under the limit), sends 2 MiB of a signed (UNSIGNED-PAYLOAD) PUT,
    then hangs up."""
    url = f"{ENDPOINT}{path}"
    creds = Credentials(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])
    req = AWSRequest(method="PUT", url=url, headers={"Content-Length": str(5 * 1024 * 1024)})
    req.headers["x-amz-content-sha256"] = "UNSIGNED-PAYLOAD"
    SigV4Auth(creds, "s3", REGION).add_auth(req)
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    conn.putrequest("PUT", u.path, skip_accept_encoding=True)
    for k, v in req.headers.items():
        conn.putheader(k, v)
    conn.endheaders()
    conn.send(b"x" * (2 * 1024 * 1024))
    conn.sock.shutdown(2)
    conn.close()


def disconnect_mid_get(path):
    """Starts a signed GET, reads 64 KiB of the body, then hangs up."""
    url = f"{ENDPOINT}{path}"
    creds = Credentials(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])
    req = AWSRequest(method="GET", url=url)
    req.headers["x-amz-content-sha256"] = hashlib.sha256(b"").hexdigest()
    SigV4Auth(creds, "s3", REGION).add_auth(req)
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    conn.request("GET", u.path, headers=dict(req.headers.items()))
    resp = conn.getresponse()
    assert resp.status == 200, resp.status
    assert len(resp.read(64 * 1024)) == 64 * 1024
    conn.sock.shutdown(2)
    conn.close()


def multipart_uploads():
    s3 = client()
    s3.create_bucket(Bucket="mpu")
    made = []
    for key in ["logs/a", "logs/b", "logs/b", "x y", "zeta"]:
        made.append((key, s3.create_multipart_upload(Bucket="mpu", Key=key)["UploadId"]))
    # Another bucket's upload never shows up here.
    s3.create_bucket(Bucket="mpu-other")
    other = s3.create_multipart_upload(Bucket="mpu-other", Key="logs/a")["UploadId"]

    r = s3.list_multipart_uploads(Bucket="mpu")
    got = [(u["Key"], u["UploadId"]) for u in r.get("Uploads", [])]
    assert [k for k, _ in got] == sorted(k for k, _ in made), got
    assert sorted(got) == sorted(made), got
    assert not r["IsTruncated"], r
    assert all("Initiated" in u for u in r["Uploads"]), r
    # Two per page, following the markers: every upload exactly once, in order.
    pages = list(s3.get_paginator("list_multipart_uploads").paginate(
        Bucket="mpu", PaginationConfig={"PageSize": 2}))
    assert len(pages) == 3, [p.get("Uploads") for p in pages]
    paged = [(u["Key"], u["UploadId"]) for p in pages for u in p.get("Uploads", [])]
    assert paged == got, paged
    # Delimiter rolls keys up; prefix filters.
    r = s3.list_multipart_uploads(Bucket="mpu", Delimiter="/")
    assert [p["Prefix"] for p in r.get("CommonPrefixes", [])] == ["logs/"], r
    assert [u["Key"] for u in r.get("Uploads", [])] == ["x y", "zeta"], r
    r = s3.list_multipart_uploads(Bucket="mpu", Prefix="logs/b")
    assert sorted(u["UploadId"] for u in r["Uploads"]) == sorted(i for k, i in made if k == "logs/b"), r
    # Aborting removes them from the listing.
    for key, upload_id in made:
        s3.abort_multipart_upload(Bucket="mpu", Key=key, UploadId=upload_id)
    assert not s3.list_multipart_uploads(Bucket="mpu").get("Uploads"), "aborted uploads listed"
    r = s3.list_multipart_uploads(Bucket="mpu-other")
    assert [u["UploadId"] for u in r["Uploads"]] == [other], r
    s3.abort_multipart_upload(Bucket="mpu-other", Key="logs/a", UploadId=other)
    expect_error("NoSuchBucket", s3.list_multipart_uploads, Bucket="no-such-bucket")
    for b in ["mpu", "mpu-other"]:
        s3.delete_bucket(Bucket=b)
    print("multipart uploads ok")


def presign(method, key, expires=300, **params):
    signer = boto3.client("s3", endpoint_url=ENDPOINT, region_name=REGION,
                          config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))
    url = signer.generate_presigned_url(method, Params={"Bucket": "sec", "Key": key, **params}, ExpiresIn=expires)
    return urllib.parse.urlsplit(url)


def signatures():
    """Security 1, 2, 4 and 6 of issue 12: unsigned x-amz-* headers, Signature V2, presigned
    URLs over 7 days, request ids in errors."""
    from botocore.auth import HmacV1Auth, HmacV1QueryAuth
    s3 = client()
    s3.create_bucket(Bucket="sec")
    s3.put_object(Bucket="sec", Key="payroll.csv", Body=b"salaries")
    # A presigned PUT for one key plus an unsigned x-amz-copy-source: refused, nothing copied.
    u = presign("put_object", "drop")
    status, body = raw("PUT", u.path, sign=False, query=u.query,
                       unsigned={"x-amz-copy-source": "/sec/payroll.csv"})
    assert status == 403 and "<Code>AccessDenied</Code>" in body, (status, body)
    expect_error("404", s3.head_object, Bucket="sec", Key="drop")
    # Unsigned user metadata on a presigned PUT, and on a header-signed PUT: refused.
    status, body = raw("PUT", u.path, body=b"x", sign=False, query=u.query,
                       unsigned={"x-amz-meta-owner": "mallory"})
    assert status == 403 and "<Code>AccessDenied</Code>" in body, (status, body)
    status, body = raw("PUT", "/sec/signed", body=b"x", unsigned={"x-amz-meta-owner": "mallory"})
    assert status == 403 and "<Code>AccessDenied</Code>" in body, (status, body)
    expect_error("404", s3.head_object, Bucket="sec", Key="drop")
    expect_error("404", s3.head_object, Bucket="sec", Key="signed")
    # The same presigned PUT, as signed, works.
    status, body = raw("PUT", u.path, body=b"dropped", sign=False, query=u.query)
    assert status == 200, (status, body)
    assert s3.get_object(Bucket="sec", Key="drop")["Body"].read() == b"dropped"
    # Signature V2, correctly signed, in the header and in a query string: refused.
    creds = Credentials(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])
    req = AWSRequest(method="DELETE", url=f"{ENDPOINT}/sec/payroll.csv")
    HmacV1Auth(creds).add_auth(req)
    assert req.headers["Authorization"].startswith("AWS "), req.headers
    status, body = raw("DELETE", "/sec/payroll.csv", sign=False, headers=dict(req.headers.items()))
    assert status == 403 and "<Code>AccessDenied</Code>" in body, (status, body)
    req = AWSRequest(method="GET", url=f"{ENDPOINT}/sec/payroll.csv")
    HmacV1QueryAuth(creds, expires=300).add_auth(req)
    q = urllib.parse.urlsplit(req.url).query
    assert "Signature=" in q and "AWSAccessKeyId=" in q, q
    status, body = raw("GET", "/sec/payroll.csv", sign=False, query=q)
    assert status == 403 and "<Code>AccessDenied</Code>" in body, (status, body)
    assert s3.get_object(Bucket="sec", Key="payroll.csv")["Body"].read() == b"salaries"
    # Presigned URLs: 7 days is the longest validity.
    u = presign("get_object", "payroll.csv", expires=604801)
    status, body = raw("GET", u.path, sign=False, query=u.query)
    assert status == 403 and "<Code>AccessDenied</Code>" in body, (status, body)
    u = presign("get_object", "payroll.csv", expires=604800)
    status, body = raw("GET", u.path, sign=False, query=u.query)
    assert status == 200 and body == "salaries", (status, body)
    # An expiry in the past: 403 "Request has expired", and nothing is written.
    u = presign("put_object", "late", expires=-1000)
    status, body = raw("PUT", u.path, body=b"x", sign=False, query=u.query)
    assert status == 403 and "expired" in body, (status, body)
    expect_error("404", s3.head_object, Bucket="sec", Key="late")
    # A wrong SigV4 signature: refused; the right one is printed for the Rust side, which
    # checks that the gateway's trace-level log never holds it.
    url = f"{ENDPOINT}/sec/payroll.csv"
    req = AWSRequest(method="DELETE", url=url)
    req.headers["x-amz-content-sha256"] = hashlib.sha256(b"").hexdigest()
    SigV4Auth(creds, "s3", REGION).add_auth(req)
    headers = dict(req.headers.items())
    good = headers["Authorization"].rsplit("Signature=", 1)[1]
    headers["Authorization"] = headers["Authorization"].replace(good, "0" * len(good))
    status, body = raw("DELETE", "/sec/payroll.csv", sign=False, headers=headers)
    assert status == 403 and "SignatureDoesNotMatch" in body, (status, body)
    print(f"correct signature: {good}")
    # Every error names its request id, in the body and the header.
    for path, sign in [("/sec/nosuchkey", True), ("/sec/payroll.csv", False)]:
        status, body, hdrs = raw_full("GET", path, sign=sign)
        assert status in (403, 404) and "<RequestId>" in body, (status, body)
        rid = body.split("<RequestId>")[1].split("</RequestId>")[0]
        assert rid and hdrs.get("x-amz-request-id") == rid, (body, hdrs)
    # Never accepted and ignored: conditional PUT, object lock, SSE headers, public ACLs.
    for h in [{"If-None-Match": "*"}, {"If-Match": '"00"'},
              {"x-amz-object-lock-mode": "GOVERNANCE", "x-amz-object-lock-retain-until-date": "2030-01-01T00:00:00Z"},
              {"x-amz-server-side-encryption": "aws:kms"}, {"x-amz-acl": "public-read"}]:
        status, body = raw("PUT", "/sec/lock", body=b"x", headers=h)
        assert status == 501 and "<Code>NotImplemented</Code>" in body, (h, status, body)
    expect_error("404", s3.head_object, Bucket="sec", Key="lock")
    status, body = raw("PUT", "/sec/lock", body=b"x", headers={"x-amz-acl": "private"})
    assert status == 200, (status, body)
    for k in ["payroll.csv", "drop", "lock"]:
        s3.delete_object(Bucket="sec", Key=k)
    s3.delete_bucket(Bucket="sec")
    print("signatures ok")


def idle_clients():
    """Security 3 of issue 12, with connections_per_address_max = 4 and header_timeout_secs
    = 2: of 7 idle connections from this address, 3 are refused with 503 SlowDown, the
    other 4 are closed by the header timeout; then an honest client is served."""
    import socket
    u = urllib.parse.urlsplit(ENDPOINT)
    socks = []
    for _ in range(7):
        s = socket.create_connection((u.hostname, u.port), timeout=30)
        socks.append(s)
    refused = 0
    for s in socks:
        data = b""
        while True:
            chunk = s.recv(4096)  # raises socket.timeout if the gateway keeps it open
            if not chunk:
                break
            data += chunk
        s.close()
        if b" 503 " in data and b"SlowDown" in data:
            refused += 1
        else:
            assert b"200" not in data, data
    assert refused == 3, f"{refused} connections refused, 3 expected"
    s3 = client()
    assert "Buckets" in s3.list_buckets()
    print("idle clients ok")


def b64(raw):
    return base64.b64encode(raw).decode()


def crc32(data):
    return zlib.crc32(data).to_bytes(4, "big")


# The CRC catalogue's check values for b"123456789" (boto3 needs awscrt for these two).
CHECK_INPUT = b"123456789"
CRC32C_OF_CHECK = bytes.fromhex("e3069283")
CRC64NVME_OF_CHECK = bytes.fromhex("ae8b14860a799888")


def aws_chunked(data, trailer=None):
    """`data` as one aws-chunked chunk, the final chunk, then `trailer` lines."""
    body = b"%x\r\n" % len(data) + data + b"\r\n0\r\n"
    for name, value in (trailer or {}).items():
        body += f"{name}:{value}\r\n".encode()
    return body + b"\r\n"


def signed_headers(method, path, headers, payload_hash, query=""):
    """SigV4 headers for a request whose body is sent separately (no Content-Length)."""
    url = f"{ENDPOINT}{path}" + (f"?{query}" if query else "")
    creds = Credentials(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])
    req = AWSRequest(method=method, url=url, headers=dict(headers))
    req.headers["x-amz-content-sha256"] = payload_hash
    SigV4Auth(creds, "s3", REGION).add_auth(req)
    return {k: v for k, v in req.headers.items() if k.lower() != "content-length"}


def put_transfer_chunked(path, pieces, headers, payload_hash):
    """A PUT with `Transfer-Encoding: chunked` and no Content-Length, one HTTP chunk per
    piece, sent only after `100 Continue` (a refusal comes before): (status, body text)."""
    import socket
    u = urllib.parse.urlsplit(ENDPOINT)
    sock = socket.create_connection((u.hostname, u.port), timeout=30)
    head = f"PUT {path} HTTP/1.1\r\nHost: {u.netloc}\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in signed_headers("PUT", path, headers, payload_hash).items())
    sock.sendall((head + "\r\n").encode())
    buf = b""

    def response_head():
        nonlocal buf
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {buf!r}"
            buf += chunk
        h, buf = buf.split(b"\r\n\r\n", 1)
        return int(h.split(b" ")[1]), h.decode()

    status, h = response_head()
    if status == 100:
        for p in pieces:
            sock.sendall(b"%x\r\n" % len(p) + p + b"\r\n")
        sock.sendall(b"0\r\n\r\n")
        status, h = response_head()
    length = next((int(line.split(":", 1)[1]) for line in h.split("\r\n") if line.lower().startswith("content-length:")), 0)
    while len(buf) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
    sock.close()
    return status, buf[:length].decode("utf-8", "replace")


def chunked_transfer():
    """Issue 12: `Transfer-Encoding: chunked` PUTs. Without aws-chunked framing the length
    is unknown until the end, which S3's PutObject refuses (411 MissingContentLength) and
    so does the gateway, storing nothing; aws-chunked framing (x-amz-decoded-content-length,
    what SDKs send with trailing checksums) streams without a Content-Length."""
    s3 = client()
    s3.create_bucket(Bucket="te-chunked")
    body = b"chunked transfer bytes\n" * 500
    pieces = [body[i : i + 4000] for i in range(0, len(body), 4000)]
    for payload_hash in [hashlib.sha256(body).hexdigest(), "UNSIGNED-PAYLOAD"]:
        status, text = put_transfer_chunked("/te-chunked/plain", pieces, {}, payload_hash)
        assert status == 411 and "<Code>MissingContentLength</Code>" in text, (payload_hash, status, text)
        assert "<RequestId>" in text, text
        expect_error("404", s3.head_object, Bucket="te-chunked", Key="plain")
    sha = b64(hashlib.sha256(body).digest())
    framed = aws_chunked(body, {"x-amz-checksum-sha256": sha})
    headers = {"Content-Encoding": "aws-chunked", "x-amz-trailer": "x-amz-checksum-sha256",
               "x-amz-decoded-content-length": str(len(body))}
    status, text = put_transfer_chunked("/te-chunked/framed", [framed[i : i + 3000] for i in range(0, len(framed), 3000)],
                                        headers, "STREAMING-UNSIGNED-PAYLOAD-TRAILER")
    assert status == 200, (status, text)
    g = s3.get_object(Bucket="te-chunked", Key="framed", ChecksumMode="ENABLED")
    assert g["Body"].read() == body and g["ChecksumSHA256"] == sha, g
    s3.delete_object(Bucket="te-chunked", Key="framed")
    s3.delete_bucket(Bucket="te-chunked")
    print("chunked transfer ok")


def slow_clients():
    """Issue 12, security 3, with transfers_max = 1 and a minimum body rate of 64 KiB/s over
    2 s: an authenticated client that trickles an upload, or reads a download slowly, loses
    its transfer and frees the one slot, so other requests are served while the slow client
    is still connected and before it has made TRICKLE_STEPS steps (the timeouts are hang
    detectors only)."""
    import socket
    import threading
    u = urllib.parse.urlsplit(ENDPOINT)
    s3 = boto3.client("s3", endpoint_url=ENDPOINT, region_name=REGION,
                      config=Config(retries={"max_attempts": 1}, read_timeout=60, connect_timeout=10,
                                    s3={"addressing_style": "path"}))
    s3.create_bucket(Bucket="slow")
    # Far more than the kernel (a 4 KiB receive buffer here, at most 4 MiB of send buffer
    # on the gateway's side), hyper and the 256 KiB response pipe can hold: without the
    # download check the store read cannot finish, and keeps the slot, until the reader
    # reads it all.
    big = os.urandom(32 * 1024 * 1024)
    s3.put_object(Bucket="slow", Key="big", Body=big)
    s3.put_object(Bucket="slow", Key="small", Body=b"small")
    outcome = {}
    stop = threading.Event()
    holds_slot = threading.Event()

    # 15 s of trickling: far more than the 2 s window, so a working check has long cut the
    # slow transfer (and freed the slot) before the slow client runs out of steps.
    TRICKLE_STEPS = 150

    def trickle_upload():
        """Announces 4 MiB, then sends 1 KiB every 100 ms (10 KiB/s) until told to stop, at
        most TRICKLE_STEPS times; out of steps first, it says so and sends the rest at full
        speed, which ends the store write and frees the slot. The socket stays open until
        told to stop."""
        headers = signed_headers("PUT", "/slow/trickled", {"Content-Length": str(4 << 20)}, "UNSIGNED-PAYLOAD")
        sock = socket.create_connection((u.hostname, u.port), timeout=60)
        head = f"PUT /slow/trickled HTTP/1.1\r\nHost: {u.netloc}\r\nContent-Length: {4 << 20}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        sock.sendall(head.encode())
        holds_slot.set()  # once its body streams the upload has the slot; see the sleep below
        sent = 0
        try:
            for _ in range(TRICKLE_STEPS):
                if stop.is_set():
                    break
                sock.sendall(b"u" * 1024)
                sent += 1024
                time.sleep(0.1)
            else:
                outcome["upload_out_of_steps"] = True
                sock.sendall(b"u" * ((4 << 20) - sent))
                sent = 4 << 20
        except OSError:
            pass
        try:
            sock.settimeout(5)
            outcome["upload"] = sock.recv(65536)
        except OSError as e:
            outcome["upload"] = repr(e).encode()
        outcome["upload_sent"] = sent
        stop.wait(60)
        sock.close()

    def trickle_download():
        """GETs 32 MiB through a 4 KiB receive buffer; once the response head is in (the
        GET holds the slot from before its head is sent), reads 1 KiB every 100 ms (10 KiB/s,
        so the connection is never idle) until told to stop, at most TRICKLE_STEPS times.
        Told to stop, it reads the rest at full speed to see whether the response was cut;
        out of reads first, it says so and reads the whole body, which ends the store read
        and frees the slot. The socket stays open until told to stop."""
        headers = signed_headers("GET", "/slow/big", {}, hashlib.sha256(b"").hexdigest())
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(30)
        sock.connect((u.hostname, u.port))
        head = f"GET /slow/big HTTP/1.1\r\nHost: {u.netloc}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        sock.sendall(head.encode())
        got = b""
        for _ in range(64):  # the head is a few hundred bytes
            if b"\r\n\r\n" in got:
                break
            chunk = sock.recv(1024)
            if not chunk:
                break
            got += chunk
        outcome["download_head"], _, rest = got.partition(b"\r\n\r\n")
        body = len(rest)
        holds_slot.set()
        ended = None
        try:
            for _ in range(TRICKLE_STEPS):
                if stop.is_set():
                    break
                chunk = sock.recv(1024)
                if not chunk:
                    ended = "eof"
                    break
                body += len(chunk)
                time.sleep(0.1)
            else:
                outcome["download_out_of_steps"] = True
            sock.settimeout(10)
            while ended is None and body < len(big):
                chunk = sock.recv(1 << 16)
                if not chunk:
                    ended = "eof"
                body += len(chunk)
        except ConnectionResetError:
            ended = "reset"
        except OSError as e:
            ended = repr(e)
        outcome["download_body"] = body
        outcome["download_ended"] = ended or "whole body"
        stop.wait(60)
        sock.close()

    for name, fn in [("upload", trickle_upload), ("download", trickle_download)]:
        stop.clear()
        holds_slot.clear()
        t = threading.Thread(target=fn, daemon=True)
        t.start()
        assert holds_slot.wait(30), f"the slow {name} client never started"
        if name == "upload":
            time.sleep(1)  # the upload's head is sent, not yet answered: let it take the slot
        # The slow client is still connected (its thread only closes its socket after `stop`),
        # so these are served only if the minimum rate freed the one slot.
        assert s3.get_object(Bucket="slow", Key="small")["Body"].read() == b"small", name
        s3.put_object(Bucket="slow", Key=f"after-{name}", Body=b"served")
        assert not outcome.get(f"{name}_out_of_steps"), \
            f"served only after the slow {name} client stopped trickling: {outcome}"
        assert t.is_alive(), f"the slow {name} client ended before the others were served"
        stop.set()
        t.join(90)
        assert not t.is_alive(), f"the slow {name} client did not stop"
    # The trickled upload was refused and stored nothing; the slow download was cut short:
    # the gateway closed the connection before the whole body.
    assert outcome["upload_sent"] < 4 << 20, outcome["upload_sent"]
    assert b"RequestTimeout" in outcome["upload"], outcome["upload"]
    expect_error("404", s3.head_object, Bucket="slow", Key="trickled")
    head = outcome["download_head"]
    assert head.startswith(b"HTTP/1.1 200") and f"content-length: {len(big)}".encode() in head.lower(), head
    assert outcome["download_ended"] in ("eof", "reset"), outcome
    assert outcome["download_body"] < len(big), outcome
    # A client at full speed is unaffected.
    assert s3.get_object(Bucket="slow", Key="big")["Body"].read() == big
    for k in ["big", "small", "after-upload", "after-download"]:
        s3.delete_object(Bucket="slow", Key=k)
    s3.delete_bucket(Bucket="slow")
    print(f"slow download: {outcome['download_body']} of {len(big)} body bytes, then {outcome['download_ended']}")
    print("slow clients ok")


def checksums():
    """Issue 12: x-amz-checksum-* verified on PUT and UploadPart (header or aws-chunked
    trailer), kept in the sealed record, returned with x-amz-checksum-mode: ENABLED and by
    GetObjectAttributes; a wrong one stores nothing."""
    s3 = client()
    s3.create_bucket(Bucket="sums")
    body = b"checksummed bytes\n" * 100
    # boto3's default (CRC32 in a header over plain HTTP): stored, echoed, validated by
    # boto3 itself on the way back.
    r = s3.put_object(Bucket="sums", Key="default", Body=body)
    assert r["ChecksumCRC32"] == b64(crc32(body)), r
    g = s3.get_object(Bucket="sums", Key="default", ChecksumMode="ENABLED")
    assert g["ChecksumCRC32"] == b64(crc32(body)) and g["ChecksumType"] == "FULL_OBJECT", g
    assert g["Body"].read() == body
    h = s3.head_object(Bucket="sums", Key="default")
    assert "ChecksumCRC32" not in h, "checksum returned without x-amz-checksum-mode"
    # Each algorithm, by raw HTTP with the right value: stored and returned.
    for alg, data, raw_sum in [
        ("crc32", body, crc32(body)),
        ("crc32c", CHECK_INPUT, CRC32C_OF_CHECK),
        ("sha1", body, hashlib.sha1(body).digest()),
        ("sha256", body, hashlib.sha256(body).digest()),
        ("crc64nvme", CHECK_INPUT, CRC64NVME_OF_CHECK),
    ]:
        key = f"right-{alg}"
        status, text = raw("PUT", f"/sums/{key}", body=data, headers={f"x-amz-checksum-{alg}": b64(raw_sum)})
        assert status == 200, (alg, status, text)
        h = s3.head_object(Bucket="sums", Key=key, ChecksumMode="ENABLED")
        field = {"crc32": "CRC32", "crc32c": "CRC32C", "sha1": "SHA1", "sha256": "SHA256", "crc64nvme": "CRC64NVME"}[alg]
        assert h.get(f"Checksum{field}") == b64(raw_sum), (alg, h)
        a = s3.get_object_attributes(Bucket="sums", Key=key, ObjectAttributes=["Checksum", "ObjectSize", "ETag"])
        assert a["Checksum"][f"Checksum{field}"] == b64(raw_sum) and a["ObjectSize"] == len(data), a
        # A well-formed but wrong value: 400 BadDigest, nothing stored.
        wrong = bytes(len(raw_sum))
        status, text = raw("PUT", f"/sums/wrong-{alg}", body=data, headers={f"x-amz-checksum-{alg}": b64(wrong)})
        assert status == 400 and "<Code>BadDigest</Code>" in text, (alg, status, text)
        expect_error("404", s3.head_object, Bucket="sums", Key=f"wrong-{alg}")
    # A wrong value over an existing object leaves the old version.
    status, text = raw("PUT", "/sums/default", body=b"other", headers={"x-amz-checksum-crc32": b64(crc32(b"x"))})
    assert status == 400 and "BadDigest" in text, (status, text)
    assert s3.get_object(Bucket="sums", Key="default")["Body"].read() == body
    # Malformed announcements: InvalidRequest; empty or malformed Content-MD5: InvalidDigest.
    for headers in [
        {"x-amz-checksum-crc32": "AAAA"},
        {"x-amz-checksum-sha256": "not base64!"},
        {"x-amz-checksum-crc32": b64(crc32(b"x")), "x-amz-checksum-sha1": b64(hashlib.sha1(b"x").digest())},
        {"x-amz-sdk-checksum-algorithm": "CRC32"},
        {"x-amz-trailer": "x-amz-checksum-crc32"},
    ]:
        status, text = raw("PUT", "/sums/malformed", body=b"x", headers=headers)
        assert status == 400 and "<Code>InvalidRequest</Code>" in text, (headers, status, text)
    for md5 in ["", "abc", "AAAA"]:
        status, text = raw("PUT", "/sums/malformed", body=b"x", headers={"Content-MD5": md5})
        assert status == 400 and "<Code>InvalidDigest</Code>" in text, (md5, status, text)
    expect_error("404", s3.head_object, Bucket="sums", Key="malformed")
    # aws-chunked with a trailing checksum (unsigned-payload trailer): verified too.
    def chunked(key, trailer):
        return raw("PUT", f"/sums/{key}", body=aws_chunked(body, trailer), payload_hash="STREAMING-UNSIGNED-PAYLOAD-TRAILER",
                   headers={"Content-Encoding": "aws-chunked", "x-amz-trailer": "x-amz-checksum-sha256",
                            "x-amz-decoded-content-length": str(len(body))})
    status, text = chunked("trailer", {"x-amz-checksum-sha256": b64(hashlib.sha256(body).digest())})
    assert status == 200, (status, text)
    g = s3.get_object(Bucket="sums", Key="trailer", ChecksumMode="ENABLED")
    assert g["Body"].read() == body and g["ChecksumSHA256"] == b64(hashlib.sha256(body).digest()), g
    assert "ContentEncoding" not in g, "aws-chunked kept as a Content-Encoding"
    status, text = chunked("trailer-wrong", {"x-amz-checksum-sha256": b64(hashlib.sha256(b"x").digest())})
    assert status == 400 and "BadDigest" in text, (status, text)
    status, text = chunked("trailer-missing", {})
    assert status == 400 and "InvalidRequest" in text, (status, text)
    for k in ["trailer-wrong", "trailer-missing"]:
        expect_error("404", s3.head_object, Bucket="sums", Key=k)
    # UploadPart: a wrong checksum stores no part.
    up = s3.create_multipart_upload(Bucket="sums", Key="mp")["UploadId"]
    status, text = raw("PUT", "/sums/mp", body=b"part", query=f"partNumber=1&uploadId={up}",
                       headers={"x-amz-checksum-crc32": b64(crc32(b"trap"))})
    assert status == 400 and "BadDigest" in text, (status, text)
    assert s3.list_parts(Bucket="sums", Key="mp", UploadId=up).get("Parts", []) == []
    s3.abort_multipart_upload(Bucket="sums", Key="mp", UploadId=up)
    # A composite SHA-256 multipart object: each part verified, the object checksum is
    # SHA-256 of the part digests, "-2".
    p1, p2 = b"a" * (5 * 1024 * 1024), b"tail"
    up = s3.create_multipart_upload(Bucket="sums", Key="sha-mp", ChecksumAlgorithm="SHA256")["UploadId"]
    parts = []
    for n, data in [(1, p1), (2, p2)]:
        r = s3.upload_part(Bucket="sums", Key="sha-mp", UploadId=up, PartNumber=n, Body=data, ChecksumAlgorithm="SHA256")
        assert r["ChecksumSHA256"] == b64(hashlib.sha256(data).digest()), r
        parts.append({"PartNumber": n, "ETag": r["ETag"], "ChecksumSHA256": r["ChecksumSHA256"]})
    lp = s3.list_parts(Bucket="sums", Key="sha-mp", UploadId=up)
    assert [p.get("ChecksumSHA256") for p in lp["Parts"]] == [p["ChecksumSHA256"] for p in parts], lp
    bad = [parts[0], dict(parts[1], ChecksumSHA256=parts[0]["ChecksumSHA256"])]
    expect_error("InvalidPart", s3.complete_multipart_upload, Bucket="sums", Key="sha-mp", UploadId=up,
                 MultipartUpload={"Parts": bad})
    r = s3.complete_multipart_upload(Bucket="sums", Key="sha-mp", UploadId=up, MultipartUpload={"Parts": parts})
    want = b64(hashlib.sha256(hashlib.sha256(p1).digest() + hashlib.sha256(p2).digest()).digest()) + "-2"
    assert r["ChecksumSHA256"] == want, r
    h = s3.head_object(Bucket="sums", Key="sha-mp", ChecksumMode="ENABLED")
    assert h["ChecksumSHA256"] == want and h["ChecksumType"] == "COMPOSITE", h
    a = s3.get_object_attributes(Bucket="sums", Key="sha-mp", ObjectAttributes=["ObjectParts", "Checksum"])
    assert a["ObjectParts"]["TotalPartsCount"] == 2 and a["Checksum"]["ChecksumSHA256"] == want, a
    # A full-object CRC32 multipart object: the CRC32 of the whole object.
    up = s3.create_multipart_upload(Bucket="sums", Key="crc-mp", ChecksumAlgorithm="CRC32",
                                    ChecksumType="FULL_OBJECT")["UploadId"]
    parts = []
    for n, data in [(1, p1), (2, p2)]:
        r = s3.upload_part(Bucket="sums", Key="crc-mp", UploadId=up, PartNumber=n, Body=data, ChecksumAlgorithm="CRC32")
        parts.append({"PartNumber": n, "ETag": r["ETag"], "ChecksumCRC32": r["ChecksumCRC32"]})
    r = s3.complete_multipart_upload(Bucket="sums", Key="crc-mp", UploadId=up, MultipartUpload={"Parts": parts})
    assert r["ChecksumCRC32"] == b64(crc32(p1 + p2)), r
    g = s3.get_object(Bucket="sums", Key="crc-mp", ChecksumMode="ENABLED")
    assert g["ChecksumCRC32"] == b64(crc32(p1 + p2)) and g["Body"].read() == p1 + p2, g
    # A copy keeps the source's algorithm, computed over the copy.
    c = s3.copy_object(Bucket="sums", Key="copy", CopySource="sums/right-sha1")
    assert c["CopyObjectResult"]["ChecksumSHA1"] == b64(hashlib.sha1(body).digest()), c
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="sums")["Contents"]]
    s3.delete_objects(Bucket="sums", Delete={"Objects": [{"Key": k} for k in keys]})
    s3.delete_bucket(Bucket="sums")
    print("checksums ok")


def conformance():
    """Issue 12: ceph/s3-tests cases the gateway used to fail (docs/conformance.md)."""
    s3 = client()
    # Re-creating one's own bucket in us-east-1 succeeds, as in S3; elsewhere it conflicts.
    s3.create_bucket(Bucket="conf")
    assert s3.create_bucket(Bucket="conf")["ResponseMetadata"]["HTTPStatusCode"] == 200
    expect_error("BucketAlreadyOwnedByYou", s3.create_bucket, Bucket="conf",
                 CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    # GetBucketLocation returns the constraint a bucket was created with (none for us-east-1).
    assert s3.get_bucket_location(Bucket="conf").get("LocationConstraint") is None
    s3.create_bucket(Bucket="conf-eu", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    assert s3.get_bucket_location(Bucket="conf-eu")["LocationConstraint"] == "eu-west-1"
    assert "conf-eu" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    s3.delete_bucket(Bucket="conf-eu")
    # Listings with EncodingType=url keep "/"; v1 returns its prefix as sent and always a
    # Marker; an empty delimiter is not echoed.
    for k in ["foo+1/bar", "foo/bar/xyzzy", "quux ab/thud", "asdf+b"]:
        s3.put_object(Bucket="conf", Key=k, Body=b"x")
    for listing in [s3.list_objects_v2, s3.list_objects]:
        r = listing(Bucket="conf", Delimiter="/", EncodingType="url")
        assert r["Delimiter"] == "/", r
        assert [o["Key"] for o in r["Contents"]] == ["asdf%2Bb"], r
        assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["foo%2B1/", "foo/", "quux%20ab/"], r
        r = listing(Bucket="conf", Delimiter="")
        assert "Delimiter" not in r and len(r["Contents"]) == 4, r
    r = s3.list_objects(Bucket="conf", Prefix="quux ab/", EncodingType="url")
    assert r["Prefix"] == "quux ab/" and [o["Key"] for o in r["Contents"]] == ["quux%20ab/thud"], r
    assert s3.list_objects(Bucket="conf")["Marker"] == "", "v1 listing without <Marker>"
    # ListObjectVersions over unversioned buckets: each object once, version "null";
    # DeleteObjects takes that version id and refuses others.
    r = s3.list_object_versions(Bucket="conf", MaxKeys=3)
    assert [(v["Key"], v["VersionId"], v["IsLatest"]) for v in r["Versions"]] == [
        ("asdf+b", "null", True), ("foo+1/bar", "null", True), ("foo/bar/xyzzy", "null", True)], r
    assert r["IsTruncated"] and r["NextKeyMarker"] == "foo/bar/xyzzy", r
    r = s3.list_object_versions(Bucket="conf", KeyMarker=r["NextKeyMarker"], VersionIdMarker=r["NextVersionIdMarker"])
    assert [v["Key"] for v in r["Versions"]] == ["quux ab/thud"] and not r["IsTruncated"], r
    r = s3.delete_objects(Bucket="conf", Delete={"Objects": [{"Key": "asdf+b", "VersionId": "null"},
                                                             {"Key": "foo+1/bar", "VersionId": "v2"}]})
    assert [(d["Key"], d.get("VersionId")) for d in r["Deleted"]] == [("asdf+b", "null")], r
    assert [(e["Key"], e["Code"]) for e in r["Errors"]] == [("foo+1/bar", "NoSuchVersion")], r
    expect_error("404", s3.head_object, Bucket="conf", Key="asdf+b")
    assert s3.head_object(Bucket="conf", Key="foo+1/bar")["ContentLength"] == 1
    # Bucket names S3 refuses beyond what s3s checks; the owner in listings.
    for bad in ["a.-b", "a-.b", "sthree-x", "x-s3alias", "x--ol-s3"]:
        expect_error("InvalidBucketName", s3.create_bucket, Bucket=bad)
    assert [o["Owner"]["ID"] for o in s3.list_objects(Bucket="conf")["Contents"]] == ["rampart"] * 3
    assert all("Owner" not in o for o in s3.list_objects_v2(Bucket="conf")["Contents"])
    r = s3.list_objects_v2(Bucket="conf", FetchOwner=True)
    assert [o["Owner"]["ID"] for o in r["Contents"]] == ["rampart"] * 3, r
    # ListBuckets pages with MaxBuckets.
    s3.create_bucket(Bucket="conf2")
    names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    r = s3.list_buckets(MaxBuckets=1)
    assert [b["Name"] for b in r["Buckets"]] == names[:1] and "ContinuationToken" in r, r
    r2 = s3.list_buckets(MaxBuckets=1, ContinuationToken=r["ContinuationToken"])
    assert [b["Name"] for b in r2["Buckets"]] == names[1:2], r2
    r = s3.list_buckets(Prefix="conf2")
    assert [b["Name"] for b in r["Buckets"]] == ["conf2"] and "ContinuationToken" not in r, r
    s3.delete_bucket(Bucket="conf2")
    # Representation headers: aws-chunked is framing, not content; no Content-Type means
    # binary/octet-stream; Expires is kept.
    for sent, kept in [("gzip, aws-chunked", "gzip"), ("aws-chunked, gzip", "gzip"), ("aws-chunked", None)]:
        s3.put_object(Bucket="conf", Key="enc", Body=b"x", ContentEncoding=sent)
        assert s3.head_object(Bucket="conf", Key="enc").get("ContentEncoding") == kept, sent
    status, text = raw("PUT", "/conf/untyped", body=b"x")
    assert status == 200, (status, text)
    assert s3.head_object(Bucket="conf", Key="untyped")["ContentType"] == "binary/octet-stream"
    expires = datetime.datetime(2030, 5, 6, 7, 8, 9, tzinfo=datetime.timezone.utc)
    s3.put_object(Bucket="conf", Key="expires", Body=b"x", Expires=expires)
    assert s3.head_object(Bucket="conf", Key="expires")["Expires"] == expires
    # A 304 carries the ETag.
    etag = s3.put_object(Bucket="conf", Key="etag", Body=b"bar")["ETag"]
    status, _, headers = raw_full("GET", "/conf/etag", headers={"If-None-Match": etag})
    assert status == 304 and headers.get("etag") == etag, (status, headers)
    # Multipart: a part listed twice (the last entry counts), and a retried Complete
    # answered again with the same result.
    up = s3.create_multipart_upload(Bucket="conf", Key="mp")["UploadId"]
    old = s3.upload_part(Bucket="conf", Key="mp", UploadId=up, PartNumber=1, Body=b"B" * 8)["ETag"]
    new = s3.upload_part(Bucket="conf", Key="mp", UploadId=up, PartNumber=1, Body=b"A" * 8)["ETag"]
    parts = [{"PartNumber": 1, "ETag": old}, {"PartNumber": 1, "ETag": new}]
    r1 = s3.complete_multipart_upload(Bucket="conf", Key="mp", UploadId=up, MultipartUpload={"Parts": parts})
    r2 = s3.complete_multipart_upload(Bucket="conf", Key="mp", UploadId=up, MultipartUpload={"Parts": parts})
    assert r1["ETag"] == r2["ETag"], (r1, r2)
    assert s3.get_object(Bucket="conf", Key="mp")["Body"].read() == b"A" * 8
    # Once the object is replaced, the old upload id is unknown again.
    s3.put_object(Bucket="conf", Key="mp", Body=b"other")
    expect_error("NoSuchUpload", s3.complete_multipart_upload, Bucket="conf", Key="mp", UploadId=up,
                 MultipartUpload={"Parts": parts})
    for v in s3.list_object_versions(Bucket="conf")["Versions"]:
        s3.delete_object(Bucket="conf", Key=v["Key"], VersionId=v["VersionId"])
    s3.delete_bucket(Bucket="conf")
    print("conformance ok")


{"paginate": paginate, "signatures": signatures, "idle_clients": idle_clients, "metadata": metadata, "bad_input": bad_input,
 "multipart_uploads": multipart_uploads, "checksums": checksums,
 "conformance": conformance, "chunked_transfer": chunked_transfer, "slow_clients": slow_clients}[STEP]()
