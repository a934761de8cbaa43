"""The emulator through the real boto3, configured only by the exports `kvs-emulator` prints.

Run by tests/python_boto3.rs with exactly those variables (and nothing else from AWS_*), so a
missing AWS_DEFAULT_REGION shows up as botocore's NoRegionError. Each check raises on failure;
the last line printed is "boto3 checks passed".
"""

import base64
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

PATH_STYLE = {"addressing_style": "path"}


def http_get(url):
    """(status, body, S3 error code or None) of a plain GET."""
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read(), None
    except urllib.error.HTTPError as e:
        body = e.read()
        code = None
        if b"<Code>" in body:
            code = body.split(b"<Code>")[1].split(b"</Code>")[0].decode()
        return e.code, body, code


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print("ok:", what)


def error_code(exc):
    return exc.response.get("Error", {}).get("Code")


def main():
    # No region argument anywhere: it must come from AWS_DEFAULT_REGION.
    session = boto3.session.Session()
    check(session.region_name == os.environ["AWS_DEFAULT_REGION"], "region from the exports")

    kvs = session.client("kinesisvideo")
    arn = kvs.create_stream(StreamName="py-cam", DataRetentionInHours=1)["StreamARN"]
    info = kvs.describe_stream(StreamName="py-cam")["StreamInfo"]
    check(info["StreamARN"] == arn and info["Status"] == "ACTIVE", "KVS control plane")
    endpoint = kvs.get_data_endpoint(StreamName="py-cam", APIName="PUT_MEDIA")["DataEndpoint"]
    check(endpoint == os.environ["AWS_ENDPOINT_URL"], "GetDataEndpoint returns the emulator")

    # S3 with SigV4 (boto3's default for operations).
    s3 = session.client("s3", config=Config(s3=PATH_STYLE))
    s3.create_bucket(Bucket="py-bucket")
    s3.put_object(Bucket="py-bucket", Key="dir/clip.bin", Body=b"0123456789" * 1000)
    got = s3.get_object(Bucket="py-bucket", Key="dir/clip.bin")["Body"].read()
    check(got == b"0123456789" * 1000, "S3 SigV4 put/get")

    # Presigned with boto3's default settings, whatever signature version they pick.
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "py-bucket", "Key": "dir/clip.bin"})
    status, body, _ = http_get(url)
    check(status == 200 and body == got, "default presigned URL: " + url.split("?")[1][:40])

    # Signature Version 2, presigned (AWSAccessKeyId / Expires / Signature) ...
    s3v2 = session.client("s3", config=Config(signature_version="s3", s3=PATH_STYLE))
    url = s3v2.generate_presigned_url("get_object", Params={"Bucket": "py-bucket", "Key": "dir/clip.bin"}, ExpiresIn=300)
    query = urllib.parse.parse_qs(urllib.parse.urlparse(url).query)
    check({"AWSAccessKeyId", "Expires", "Signature"} <= set(query), "a SigV2 presigned URL")
    status, body, _ = http_get(url)
    check(status == 200 and body == got, "SigV2 presigned GET accepted")
    # ... refused like real S3 when tampered with or expired,
    sig = query["Signature"][0]
    bad_sig = ("A" if sig[0] != "A" else "B") + sig[1:]
    tampered = url.replace(urllib.parse.quote(sig, safe=""), urllib.parse.quote(bad_sig, safe=""))
    check(tampered != url, "signature replaced in the URL")
    status, _, code = http_get(tampered)
    check(status == 403 and code == "SignatureDoesNotMatch", "tampered SigV2 URL: %s %s" % (status, code))
    other_key = url.replace("dir%2Fclip.bin", "dir%2Fother.bin").replace("dir/clip.bin", "dir/other.bin")
    status, _, code = http_get(other_key)
    check(status == 403 and code == "SignatureDoesNotMatch", "SigV2 URL for another key: %s %s" % (status, code))
    short = s3v2.generate_presigned_url("get_object", Params={"Bucket": "py-bucket", "Key": "dir/clip.bin"}, ExpiresIn=1)
    time.sleep(2.2)
    status, _, code = http_get(short)
    check(status == 403 and code == "AccessDenied", "expired SigV2 URL: %s %s" % (status, code))

    # ... and header-signed (Authorization: AWS AKID:signature).
    s3v2.put_object(Bucket="py-bucket", Key="v2.txt", Body=b"signed with v2")
    check(s3v2.get_object(Bucket="py-bucket", Key="v2.txt")["Body"].read() == b"signed with v2", "SigV2 header-signed put/get")
    wrong = boto3.session.Session(
        aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key="not-the-secret",
    ).client("s3", config=Config(signature_version="s3", s3=PATH_STYLE, retries={"max_attempts": 1}))
    try:
        wrong.get_object(Bucket="py-bucket", Key="v2.txt")
        raise AssertionError("a wrong SigV2 secret was accepted")
    except ClientError as e:
        check(e.response["ResponseMetadata"]["HTTPStatusCode"] == 403 and error_code(e) == "SignatureDoesNotMatch",
              "wrong SigV2 secret: %s" % error_code(e))

    # STS: the caller, then web identity (unsigned, as boto3 sends it).
    sts = session.client("sts")
    check(sts.get_caller_identity()["Arn"].endswith(":user/emulator"), "GetCallerIdentity")

    def b64(obj):
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    jwt = "%s.%s.%s" % (b64({"alg": "RS256"}), b64({"sub": "system:serviceaccount:ns:sa", "aud": "sts.amazonaws.com",
                                                   "iss": "https://oidc.example", "exp": int(time.time()) + 600}), "c2ln")
    resp = sts.assume_role_with_web_identity(RoleArn="arn:aws:iam::000000000000:role/py-role",
                                              RoleSessionName="py-session", WebIdentityToken=jwt)
    check(resp["SubjectFromWebIdentityToken"] == "system:serviceaccount:ns:sa", "web identity subject")
    creds = resp["Credentials"]
    temp = boto3.session.Session(aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                                 aws_session_token=creds["SessionToken"])
    names = [s["StreamName"] for s in temp.client("kinesisvideo").list_streams()["StreamInfoList"]]
    check("py-cam" in names, "web identity credentials work for KVS")
    try:
        sts.assume_role_with_web_identity(RoleArn="arn:aws:iam::000000000000:role/py-role",
                                          RoleSessionName="py-session", WebIdentityToken="not-a-jwt")
        raise AssertionError("a malformed web identity token was accepted")
    except ClientError as e:
        check(error_code(e) == "InvalidIdentityToken", "malformed token refused: %s" % error_code(e))

    print("boto3 checks passed")


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - the Rust runner shows this
        print("FAILED: %r" % (e,), file=sys.stderr)
        raise
