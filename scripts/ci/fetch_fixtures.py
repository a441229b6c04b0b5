"""Fixtures for scripts/ci/fetch-e2e.sh, against the real local servers it starts.

    python fetch_fixtures.py s3 --endpoint URL --out DIR
        On a moto server started with INITIAL_NO_AUTH_ACTION_COUNT=4: creates an IAM user with
        an access key allowed s3:* (the four unauthenticated actions), then, with that key,
        bucket `models` holding
          fraud/1.0.0/model.skops      random bytes
          fraud/folder/{a.json,sub/b.bin}
          fraud/1.0.0/model.tar.gz     model/model.skops + model/MLmodel
          evil/model.tar.gz            an entry named ../escaped (a path traversal attempt)
        and writes DIR/credentials.env (AWS_ACCESS_KEY_ID=…, AWS_SECRET_ACCESS_KEY=…), the
        objects' bytes under DIR/objects/ (same keys) for comparison.

    python fetch_fixtures.py registry --tracking-uri URL --out FILE [--s3-location s3://…]
        Logs a scikit-learn model (skops format: a folder with MLmodel and model.skops) twice,
        registers both as versions of `fraud`, points alias `champion` at version 1. With
        --s3-location (and AWS_*/MLFLOW_S3_ENDPOINT_URL set), also logs one into an experiment
        stored there and registers it as `fraud-s3` version 1, whose files are on S3.
        Writes {"name", "versions", "alias", "aliasVersion", "s3Name"} to FILE.
"""
import argparse
import io
import json
import os
import tarfile


def s3(args):
    import boto3

    ep = args.endpoint
    boot = dict(endpoint_url=ep, region_name="us-east-1",
                aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
    iam = boto3.client("iam", **boot)
    iam.create_user(UserName="drover")
    policy = iam.create_policy(
        PolicyName="models-read-write",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}),
    )["Policy"]["Arn"]
    iam.attach_user_policy(UserName="drover", PolicyArn=policy)
    key = iam.create_access_key(UserName="drover")["AccessKey"]
    client = boto3.client("s3", endpoint_url=ep, region_name="us-east-1",
                          aws_access_key_id=key["AccessKeyId"],
                          aws_secret_access_key=key["SecretAccessKey"])
    client.create_bucket(Bucket="models")

    def tar_gz(entries):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for name, data in entries:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return buf.getvalue()

    weights = os.urandom(256 * 1024)
    objects = {
        "fraud/1.0.0/model.skops": weights,
        "fraud/folder/a.json": b'{"a": 1}',
        "fraud/folder/sub/b.bin": os.urandom(1000),
        "fraud/1.0.0/model.tar.gz": tar_gz([("model/model.skops", weights),
                                            ("model/MLmodel", b"flavors: {}\n")]),
        "evil/model.tar.gz": tar_gz([("model/ok.txt", b"ok"), ("../escaped", b"owned")]),
    }
    for k, body in objects.items():
        client.put_object(Bucket="models", Key=k, Body=body)
        path = os.path.join(args.out, "objects", k)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(body)
    with open(os.path.join(args.out, "credentials.env"), "w") as f:
        f.write(f"AWS_ACCESS_KEY_ID={key['AccessKeyId']}\n")
        f.write(f"AWS_SECRET_ACCESS_KEY={key['SecretAccessKey']}\n")


def registry(args):
    import mlflow
    import numpy as np
    from mlflow import MlflowClient
    from sklearn.linear_model import LogisticRegression

    mlflow.set_tracking_uri(args.tracking_uri)
    rng = np.random.default_rng(7)
    x = rng.normal(size=(200, 3))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)

    def log(name, c):
        model = LogisticRegression(C=c).fit(x, y)
        with mlflow.start_run():
            info = mlflow.sklearn.log_model(
                model,
                name="model",
                serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
                skops_trusted_types=[],
                registered_model_name=name,
            )
        return str(info.registered_model_version)

    mlflow.set_experiment("drover-fetch-e2e")
    versions = [log(args.name, 1.0), log(args.name, 0.1)]
    client = MlflowClient()
    client.set_registered_model_alias(args.name, "champion", versions[0])
    out = {"name": args.name, "versions": versions, "alias": "champion",
           "aliasVersion": versions[0]}
    if args.s3_location:
        exp = client.create_experiment("drover-fetch-e2e-s3", artifact_location=args.s3_location)
        mlflow.set_experiment(experiment_id=exp)
        out["s3Name"] = args.name + "-s3"
        out["s3Version"] = log(out["s3Name"], 0.5)
    with open(args.out, "w") as f:
        json.dump(out, f)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("s3")
    a.add_argument("--endpoint", required=True)
    a.add_argument("--out", required=True)
    b = sub.add_parser("registry")
    b.add_argument("--tracking-uri", required=True)
    b.add_argument("--name", default="fraud")
    b.add_argument("--out", required=True)
    b.add_argument("--s3-location")
    args = p.parse_args()
    {"s3": s3, "registry": registry}[args.cmd](args)


if __name__ == "__main__":
    main()
