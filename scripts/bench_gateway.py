#!/usr/bin/env python3
"""Throughput of `rampart gateway` with the AWS CLI, against two baselines measured in the
same run: the same CLI against moto_server used as a plain S3 endpoint, and `rampart
put`/`rampart get` on the same kind of store.

    ./scripts/bench-gateway.sh            # builds the release binary, then runs this
    python scripts/bench_gateway.py --rampart target/release/rampart \
        --aws .test-tools/venv/bin/aws --moto .test-tools/venv/bin/moto_server [--mib 256] [--runs 3]

Each transfer runs `--runs` times; the median is reported. Stores are fresh `rampart init`
stores (4 local-directory clouds, DepSky-CA) under a temporary directory; the gateway runs
three times: over HTTP, over HTTPS (a self-signed certificate the CLI is told to trust),
and over a sealed single cloud (`rampart init --clouds 1`).
"""
import argparse
import hashlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time


MANY_KEYS = 1100


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what, deadline_s=60):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            sys.exit(f"{what} exited before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{what} did not listen within {deadline_s} s")


def timed(cmd, env=None, cwd=None):
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def self_signed(directory):
    """Writes cert.pem and key.pem (mode 0600) for 127.0.0.1 into `directory`; returns
    the certificate's path. Uses `cryptography`, which moto installs."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rampart bench")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path = os.path.join(directory, "cert.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    key_path = os.path.join(directory, "key.pem")
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cert_path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rampart", required=True)
    ap.add_argument("--aws", required=True)
    ap.add_argument("--moto", required=True)
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--runs", type=int, default=3)
    # Ratios print as "gateway / baseline" throughput (1.00x = as fast as the baseline).
    a = ap.parse_args()
    rampart = os.path.abspath(a.rampart)
    a.aws, a.moto = os.path.abspath(a.aws), os.path.abspath(a.moto)
    tmp = tempfile.mkdtemp(prefix="rampart-bench-gw-")
    src = os.path.join(tmp, "object.bin")
    with open(src, "wb") as f:
        for _ in range(a.mib):
            f.write(os.urandom(1 << 20))
    want = digest(src)
    many = os.path.join(tmp, "many")
    os.makedirs(many)
    for i in range(MANY_KEYS):
        with open(os.path.join(many, f"k{i:05d}"), "wb") as f:
            f.write(b"x" * 100)
    listing = {}
    procs = []
    try:
        # Stores for the gateways (4 clouds over HTTP and HTTPS, and the sealed single
        # backend), and a separate one for rampart put/get.
        cli_dir = os.path.join(tmp, "cli")
        os.makedirs(cli_dir)
        subprocess.run([rampart, "init"], cwd=cli_dir, check=True, stdout=subprocess.DEVNULL)
        gateways = {}
        for name, clouds, tls in (("gateway", 4, False), ("gateway-tls", 4, True), ("gateway-1", 1, False)):
            d = os.path.join(tmp, name)
            os.makedirs(d)
            subprocess.run([rampart, "init", "--clouds", str(clouds)], cwd=d, check=True,
                           stdout=subprocess.DEVNULL)
            extra = []
            if tls:
                cert = self_signed(d)
                cfg = os.path.join(d, "rampart.toml")
                text = open(cfg).read().replace(
                    "[gateway]\n", '[gateway]\ntls_cert_file = "cert.pem"\ntls_key_file = "key.pem"\n', 1)
                open(cfg, "w").write(text)
                extra = ["--ca-bundle", cert]
            gw = subprocess.Popen([rampart, "gateway", "--listen", "127.0.0.1:0"], cwd=d,
                                  stdout=subprocess.PIPE, text=True)
            procs.append(gw)
            line = gw.stdout.readline()
            url = next(w for w in line.split() if w.startswith(("http://", "https://")))
            keys = {}
            for l in open(os.path.join(d, "rampart.toml")):
                if "=" in l and l.split("=")[0].strip() in ("access_key_id", "secret_access_key"):
                    keys[l.split("=")[0].strip()] = l.split("=", 1)[1].strip().strip('"')
            gateways[name] = (url, keys, extra)
        moto_port = free_port()
        moto = subprocess.Popen([a.moto, "-H", "127.0.0.1", "-p", str(moto_port)], cwd=tmp,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(moto)
        wait_port(moto_port, moto, "moto_server")
        moto_url = f"http://127.0.0.1:{moto_port}"

        base_env = dict(os.environ, AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true",
                        AWS_CONFIG_FILE=os.path.join(tmp, "none"), AWS_SHARED_CREDENTIALS_FILE=os.path.join(tmp, "none"))
        moto_env = dict(base_env, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="benchbenchbench")

        results = {}

        def aws_case(name, url, env, extra=()):
            aws = [a.aws, *extra]
            subprocess.run([*aws, "--endpoint-url", url, "s3", "mb", "s3://bench"], env=env, check=True,
                           stdout=subprocess.DEVNULL)
            ups, downs = [], []
            for i in range(a.runs):
                dst = os.path.join(tmp, f"{name}.{i}.out")
                ups.append(timed([*aws, "--endpoint-url", url, "s3", "cp", "--only-show-errors", src,
                                  f"s3://bench/object-{i}.bin"], env=env))
                downs.append(timed([*aws, "--endpoint-url", url, "s3", "cp", "--only-show-errors",
                                    f"s3://bench/object-{i}.bin", dst], env=env))
                assert digest(dst) == want, f"{name}: downloaded bytes differ"
                os.remove(dst)
            results[name] = (statistics.median(ups), statistics.median(downs))
            # Listing: 1,100 small keys (two pages of the CLI's 1,000-key pages).
            subprocess.run([*aws, "--endpoint-url", url, "s3", "sync", "--only-show-errors", many,
                            "s3://bench/many"], env=env, check=True)
            lists = []
            for _ in range(a.runs):
                t0 = time.perf_counter()
                out = subprocess.run([*aws, "--endpoint-url", url, "s3", "ls", "--recursive",
                                      "s3://bench/many/"], env=env, check=True, capture_output=True,
                                     text=True).stdout
                lists.append(time.perf_counter() - t0)
                assert len(out.splitlines()) == MANY_KEYS, f"{name}: listed {len(out.splitlines())}"
            listing[name] = statistics.median(lists)

        for name, (url, keys, extra) in gateways.items():
            env = dict(base_env, AWS_ACCESS_KEY_ID=keys["access_key_id"],
                       AWS_SECRET_ACCESS_KEY=keys["secret_access_key"])
            aws_case(name, url, env, extra)
        aws_case("moto", moto_url, moto_env)
        ups, downs = [], []
        for i in range(a.runs):
            dst = os.path.join(tmp, f"cli.{i}.out")
            ups.append(timed([rampart, "put", src, f"object-{i}.bin"], cwd=cli_dir))
            downs.append(timed([rampart, "get", f"object-{i}.bin", dst], cwd=cli_dir))
            assert digest(dst) == want, "rampart get: bytes differ"
            os.remove(dst)
        results["cli"] = (statistics.median(ups), statistics.median(downs))
    finally:
        for p in procs:
            p.terminate()
            p.wait()
        subprocess.run(["rm", "-rf", tmp])

    mib = a.mib
    print(f"{mib} MiB object, median of {a.runs} runs, MiB/s (higher is better)")
    labels = {"gateway": "aws s3 cp -> rampart gateway (4 clouds, DepSky-CA)",
              "gateway-tls": "aws s3 cp -> rampart gateway, HTTPS (4 clouds)",
              "gateway-1": "aws s3 cp -> rampart gateway (1 sealed cloud)",
              "moto": "aws s3 cp -> moto_server (plain S3, baseline)",
              "cli": "rampart put / rampart get (4 clouds, baseline)"}
    for k in ("gateway", "gateway-tls", "gateway-1", "moto", "cli"):
        up, down = results[k]
        print(f"  {labels[k]:<52} upload {mib / up:7.1f}   download {mib / down:7.1f}")
    g, m, c = results["gateway"], results["moto"], results["cli"]
    print(f"  gateway / moto_server:        upload {m[0] / g[0]:5.2f}x   download {m[1] / g[1]:5.2f}x")
    print(f"  aws s3 ls --recursive of {MANY_KEYS} keys (2 pages), s: gateway {listing['gateway']:.2f}, "
          f"moto_server {listing['moto']:.2f} (gateway/moto {listing['gateway'] / listing['moto']:.2f}x the time)")
    print(f"  gateway / rampart put,get:    upload {c[0] / g[0]:5.2f}x   download {c[1] / g[1]:5.2f}x")
    t, o = results["gateway-tls"], results["gateway-1"]
    print(f"  HTTPS / HTTP gateway:         upload {g[0] / t[0]:5.2f}x   download {g[1] / t[1]:5.2f}x")
    print(f"  1 sealed cloud / 4 clouds:    upload {g[0] / o[0]:5.2f}x   download {g[1] / o[1]:5.2f}x")
    print(f"  listing, s: HTTPS {listing['gateway-tls']:.2f}, 1 sealed cloud {listing['gateway-1']:.2f}")


if __name__ == "__main__":
    main()
