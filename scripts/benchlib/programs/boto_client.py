"""The boto3 client every baseline program uses: the bench's moto endpoint, path style."""

import os

import boto3
from botocore.config import Config

s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1",
                  config=Config(s3={"addressing_style": "path"}, max_pool_connections=32))
