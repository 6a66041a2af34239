"""The fixed cost of the boto3 baseline: import boto3 and make a client, no request."""

import boto_client  # noqa: F401
