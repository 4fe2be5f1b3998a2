"""An S3-compatible server (moto's) and the boto3 calls the tests make on it.

Used by tests/src/s3.rs (the `S3` harness) and host/bench/s3-fetch-bench.sh; run with the
repository's .venv (boto3 and moto[server]).

    s3_setup.py serve [--no-auth] [--forever]
        Starts moto on 127.0.0.1 at a free port, prints `listening on http://127.0.0.1:PORT`
        and serves until its stdin closes (so it dies with the process that started it,
        however that ends), or with --forever until it is killed; exits 3 at once if moto
        is not installed. Without --no-auth, moto checks every request's signature and IAM
        permissions once the first SETUP_CALLS requests (the `setup` command's) are done.
    s3_setup.py setup ENDPOINT
        Run exactly once, first, against a server started without --no-auth: makes an IAM
        user allowed s3:* on everything, checks that its key is accepted and a wrong secret
        refused (SignatureDoesNotMatch), and prints the key as JSON
        {"access_key_id": ..., "secret_access_key": ...}.
    s3_setup.py create-bucket ENDPOINT BUCKET
    s3_setup.py put-file ENDPOINT BUCKET KEY PATH     (upload_file: multipart when large)
    s3_setup.py put-bytes ENDPOINT BUCKET KEY         (the object's bytes on stdin)
    s3_setup.py get-file ENDPOINT BUCKET KEY PATH     (download_file)
    s3_setup.py get ENDPOINT BUCKET KEY
        GetObject: prints `ok SIZE`, or `error HTTP_STATUS CODE` and exits 3 if S3 refuses.

The client commands sign with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (region
AWS_REGION, default us-east-1) and use path-style addressing.
"""

import json
import os
import sys
import threading

# The `setup` command's requests, which moto lets through unsigned: create_user,
# put_user_policy, create_access_key. Every later request must be signed by a key in
# moto's IAM whose policy allows it.
SETUP_CALLS = 3

# The exit status of `serve` when moto is not installed.
MISSING = 3

USER = "plinth-tests"
POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
}


def serve(args):
    if "--no-auth" not in args:
        # Read by moto.settings when it is imported, so it must be set first.
        os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = str(SETUP_CALLS)
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as e:
        print(f"s3_setup.py: moto[server] is not installed ({e})", file=sys.stderr)
        sys.exit(MISSING)

    server = ThreadedMotoServer("127.0.0.1", 0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    # What moto_server sets for its own port (used when moto builds URLs to itself).
    os.environ["MOTO_PORT"] = str(port)
    print(f"listening on http://{host}:{port}", flush=True)
    if "--forever" in args:
        threading.Event().wait()
    # Serve until the parent closes our stdin, on purpose or by exiting or dying.
    while sys.stdin.buffer.read(65536):
        pass
    os._exit(0)


def client(service, endpoint, **keys):
    import boto3
    from botocore.config import Config

    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        **keys,
    )


def setup(endpoint):
    # Any key will do for the unsigned setup calls.
    iam = client("iam", endpoint, aws_access_key_id="setup", aws_secret_access_key="setup")
    iam.create_user(UserName=USER)
    iam.put_user_policy(UserName=USER, PolicyName="s3-all", PolicyDocument=json.dumps(POLICY))
    key = iam.create_access_key(UserName=USER)["AccessKey"]
    key_id, secret = key["AccessKeyId"], key["SecretAccessKey"]

    # Authentication is on from here: the key works, a wrong secret does not.
    from botocore.exceptions import ClientError

    client("s3", endpoint, aws_access_key_id=key_id, aws_secret_access_key=secret).list_buckets()
    wrong = client("s3", endpoint, aws_access_key_id=key_id, aws_secret_access_key=secret + "x")
    try:
        wrong.list_buckets()
        sys.exit("s3_setup.py: moto accepted a wrong secret key: authentication is off")
    except ClientError as e:
        code = e.response["Error"]["Code"]
        if code != "SignatureDoesNotMatch":
            sys.exit(f"s3_setup.py: a wrong secret key got {code}, not SignatureDoesNotMatch")
    print(json.dumps({"access_key_id": key_id, "secret_access_key": secret}))


def main(argv):
    command, args = argv[0], argv[1:]
    if command == "serve":
        return serve(args)
    if command == "setup":
        return setup(*args)
    endpoint, args = args[0], args[1:]
    s3 = client("s3", endpoint)
    if command == "create-bucket":
        (bucket,) = args
        s3.create_bucket(Bucket=bucket)
    elif command == "put-file":
        bucket, key, path = args
        s3.upload_file(path, bucket, key)
    elif command == "put-bytes":
        bucket, key = args
        s3.put_object(Bucket=bucket, Key=key, Body=sys.stdin.buffer.read())
    elif command == "get-file":
        bucket, key, path = args
        s3.download_file(bucket, key, path)
    elif command == "get":
        from botocore.exceptions import ClientError

        bucket, key = args
        try:
            size = len(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        except ClientError as e:
            status = e.response["ResponseMetadata"]["HTTPStatusCode"]
            print(f"error {status} {e.response['Error']['Code']}")
            return 3
        print(f"ok {size}")
    else:
        sys.exit(f"s3_setup.py: unknown command {command!r}; see the docstring")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
