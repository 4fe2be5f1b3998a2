"""boto3 over HTTPS: the `sagemaker` and `sagemaker-runtime` clients against a Plinth server
started with --tls-cert/--tls-key (a certificate the Rust test made for 127.0.0.1), trusting
only that certificate; and the same server refusing plain HTTP.

Environment: PLINTH_URL (https://127.0.0.1:PORT), PLINTH_CA (the certificate, PEM),
PLINTH_ACCESS_KEY, PLINTH_SECRET_KEY, PLINTH_ECHO_WASM.
"""

import os
import sys

import boto3
import botocore.config
import botocore.exceptions

URL = os.environ["PLINTH_URL"]
assert URL.startswith("https://"), URL
CA = os.environ["PLINTH_CA"]


def client(service, verify=CA, url=URL):
    return boto3.client(
        service,
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=os.environ["PLINTH_ACCESS_KEY"],
        aws_secret_access_key=os.environ["PLINTH_SECRET_KEY"],
        verify=verify,
        config=botocore.config.Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=30),
    )


sm = client("sagemaker")
sm.create_model(ModelName="tls", PrimaryContainer={"Image": os.environ["PLINTH_ECHO_WASM"]})
sm.create_endpoint_config(
    EndpointConfigName="tls",
    ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": "tls", "InitialInstanceCount": 1}],
)
sm.create_endpoint(EndpointName="tls", EndpointConfigName="tls")
sm.get_waiter("endpoint_in_service").wait(EndpointName="tls", WaiterConfig={"Delay": 0.2, "MaxAttempts": 300})
answer = client("sagemaker-runtime").invoke_endpoint(
    EndpointName="tls", ContentType="text/plain", Body=b"over tls"
)
body = answer["Body"].read()
assert body == b"over tls", body

# Without the certificate trusted, the client refuses the server.
try:
    client("sagemaker", verify=True).list_models()
    sys.exit("an untrusted certificate was accepted")
except botocore.exceptions.SSLError:
    pass

# Plain HTTP to the TLS port gets no HTTP answer (only a TLS alert, and the connection closes).
try:
    client("sagemaker", url=URL.replace("https://", "http://")).list_models()
    sys.exit("plain HTTP was answered on the TLS port")
except (botocore.exceptions.HTTPClientError, botocore.exceptions.ConnectionError):
    pass
print("boto3 over HTTPS: ok")
