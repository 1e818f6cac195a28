"""A boto3 client of `rampart gateway` for tests/history.rs: puts, gets and deletes on a
few keys for a fixed time, and prints one line per operation for the history checker.

Usage: python gateway_worker.py ENDPOINT BUCKET SECONDS SEED
Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.

Each line: `op key value start_ns end_ns ok|fail detail`, where op is put, del or get,
value is the put's tag (or the tag a get returned, "absent" for NoSuchKey, "-" otherwise),
and detail is the error, with spaces replaced, for a failed operation.
"""
import os
import random
import sys
import time

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

ENDPOINT, BUCKET, SECONDS, SEED = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
KEYS = ["g0", "g1"]
# No retries: every attempt is one recorded operation. Generous timeouts: a stalled cloud
# must cost the gateway, not the client.
CFG = Config(
    retries={"max_attempts": 1},
    s3={"addressing_style": "path"},
    read_timeout=120,
    connect_timeout=10,
)
s3 = boto3.client(
    "s3",
    endpoint_url=ENDPOINT,
    region_name="us-east-1",
    aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
    aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
    config=CFG,
)


def emit(op, key, value, start, ok, detail=""):
    detail = "".join(c if c.isalnum() else "_" for c in str(detail))[:200] or "-"
    print(f"{op} {key} {value} {start} {time.time_ns()} {'ok' if ok else 'fail'} {detail}", flush=True)


def main():
    rng = random.Random(SEED)
    deadline = time.time() + SECONDS
    for attempt in range(30):
        try:
            s3.create_bucket(Bucket=BUCKET)
            break
        except ClientError as e:
            if e.response["Error"]["Code"] in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                break
            if attempt == 29:
                raise
            time.sleep(0.5)
    seq = 0
    while time.time() < deadline:
        key = rng.choice(KEYS)
        r = rng.random()
        start = time.time_ns()
        if r < 0.5:
            seq += 1
            tag = f"gw-{seq}"
            body = (f"TAG:{tag}\n").encode() + os.urandom(rng.choice([64, 3000, 40000]))
            try:
                s3.put_object(Bucket=BUCKET, Key=key, Body=body)
                emit("put", key, tag, start, True)
            except Exception as e:  # any failure leaves the outcome unknown
                emit("put", key, tag, start, False, e)
        elif r < 0.85:
            try:
                body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
                first = body.split(b"\n", 1)[0]
                tag = first[4:].decode() if first.startswith(b"TAG:") else "<garbage>"
                emit("get", key, tag, start, True)
            except ClientError as e:
                if e.response["Error"]["Code"] == "NoSuchKey":
                    emit("get", key, "absent", start, True)
                else:
                    emit("get", key, "-", start, False, e)
            except Exception as e:
                emit("get", key, "-", start, False, e)
        else:
            try:
                s3.delete_object(Bucket=BUCKET, Key=key)
                emit("del", key, "absent", start, True)
            except Exception as e:
                emit("del", key, "absent", start, False, e)


main()
