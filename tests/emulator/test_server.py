"""Self-test of the keyturn emulator (server.py), with boto3 from the emulator's venv.

Run from the workspace root:

    target/emulator-venv/bin/python tests/emulator/test_server.py

Each test starts server.py as a subprocess on a free port and stops it afterwards.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import subprocess
import sys
import threading
import time
import unittest
import urllib.error
import urllib.request
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

SERVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "server.py")
UTC = dt.timezone.utc


class Emulator:
    """A server.py child process and helpers to talk to it."""

    def __init__(self, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, SERVER, "--port", "0", "--exit-on-stdin-eof", *extra],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if not line.startswith("KEYTURN_EMULATOR_READY "):
            self.proc.kill()
            raise AssertionError(f"unexpected first line: {line!r}")
        self.url = line.split()[1]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None and not pipe.closed:
                pipe.close()

    def control(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, method=method, data=data)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    def client(self, service: str, retries: int = 0, **credentials: str) -> Any:
        credentials = credentials or {
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
        }
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name="us-east-1",
            config=Config(retries={"mode": "standard", "total_max_attempts": retries + 1}),
            **credentials,
        )


def load_server() -> Any:
    """server.py as a module of this process, to apply its patches to moto in-process."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("keyturn_emulator_server", SERVER)
    assert spec is not None and spec.loader is not None
    server = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(server)
    return server


def credential_report(iam: Any) -> list[dict[str, str]]:
    iam.generate_credential_report()
    content = iam.get_credential_report()["Content"].decode()
    return list(csv.DictReader(io.StringIO(content)))


class EmulatorTest(unittest.TestCase):
    def setUp(self) -> None:
        self.emu = Emulator()
        self.addCleanup(self.emu.stop)

    def test_health_and_process(self) -> None:
        self.assertEqual(self.emu.control("GET", "/_keyturn/health"), (200, {"ok": True}))
        status, stats = self.emu.control("GET", "/_keyturn/process")
        self.assertEqual(status, 200)
        self.assertGreater(stats["cpu_seconds"], 0)
        self.assertGreater(stats["max_rss_kb"], 10_000)

    def test_backdated_key_shows_in_list_and_credential_report(self) -> None:
        iam = self.emu.client("iam")
        iam.create_user(UserName="alice")
        old = iam.create_access_key(UserName="alice")["AccessKey"]["AccessKeyId"]
        new = iam.create_access_key(UserName="alice")["AccessKey"]["AccessKeyId"]
        status, body = self.emu.control(
            "POST",
            "/_keyturn/iam/access-key",
            {"access_key_id": old, "create_date": "2026-07-01T12:00:00Z"},
        )
        self.assertEqual((status, body), (200, {"account_id": "123456789012", "user_name": "alice"}))

        keys = {k["AccessKeyId"]: k for k in iam.list_access_keys(UserName="alice")["AccessKeyMetadata"]}
        self.assertEqual(keys[old]["CreateDate"], dt.datetime(2026, 7, 1, 12, tzinfo=UTC))
        self.assertGreater(keys[new]["CreateDate"], dt.datetime(2026, 7, 2, tzinfo=UTC))

        (row,) = credential_report(iam)
        self.assertEqual(row["access_key_1_last_rotated"], "2026-07-01T12:00:00+00:00")
        self.assertNotEqual(row["access_key_2_last_rotated"], "2026-07-01T12:00:00+00:00")
        for n in (1, 2):
            for column in ("date", "region", "service"):
                self.assertEqual(row[f"access_key_{n}_last_used_{column}"], "N/A")

        status, body = self.emu.control(
            "POST", "/_keyturn/iam/access-key", {"access_key_id": "AKIADOESNOTEXIST0000"}
        )
        self.assertEqual(status, 404)
        self.assertIn("error", body)

    def test_last_used_set_and_cleared(self) -> None:
        iam = self.emu.client("iam")
        iam.create_user(UserName="bob")
        key = iam.create_access_key(UserName="bob")["AccessKey"]["AccessKeyId"]
        never = iam.get_access_key_last_used(AccessKeyId=key)["AccessKeyLastUsed"]
        self.assertNotIn("LastUsedDate", never)
        self.assertEqual((never["ServiceName"], never["Region"]), ("N/A", "N/A"))

        used = {"date": "2026-08-02T03:04:05Z", "service": "s3", "region": "eu-west-1"}
        status, _ = self.emu.control(
            "POST", "/_keyturn/iam/access-key", {"access_key_id": key, "last_used": used}
        )
        self.assertEqual(status, 200)
        last = iam.get_access_key_last_used(AccessKeyId=key)["AccessKeyLastUsed"]
        self.assertEqual(last["LastUsedDate"], dt.datetime(2026, 8, 2, 3, 4, 5, tzinfo=UTC))
        self.assertEqual((last["ServiceName"], last["Region"]), ("s3", "eu-west-1"))
        (row,) = credential_report(iam)
        self.assertEqual(row["access_key_1_last_used_date"], "2026-08-02T03:04:05+00:00")
        self.assertEqual(row["access_key_1_last_used_region"], "eu-west-1")
        self.assertEqual(row["access_key_1_last_used_service"], "s3")

        status, _ = self.emu.control(
            "POST", "/_keyturn/iam/access-key", {"access_key_id": key, "last_used": None}
        )
        self.assertEqual(status, 200)
        last = iam.get_access_key_last_used(AccessKeyId=key)["AccessKeyLastUsed"]
        self.assertNotIn("LastUsedDate", last)
        (row,) = credential_report(iam)
        self.assertEqual(row["access_key_1_last_used_date"], "N/A")

        # A request signed with the key marks it used now, as AWS does (without lag).
        iam.delete_access_key(UserName="bob", AccessKeyId=key)
        created = iam.create_access_key(UserName="bob")["AccessKey"]
        key, secret = created["AccessKeyId"], created["SecretAccessKey"]
        sts = self.emu.client("sts", aws_access_key_id=key, aws_secret_access_key=secret)
        sts.get_caller_identity()
        last = iam.get_access_key_last_used(AccessKeyId=key)["AccessKeyLastUsed"]
        self.assertEqual((last["ServiceName"], last["Region"]), ("sts", "us-east-1"))
        (row,) = credential_report(iam)
        self.assertEqual(row["access_key_1_last_used_service"], "sts")

    def test_throttle_count_then_success(self) -> None:
        iam = self.emu.client("iam")
        status, _ = self.emu.control(
            "POST", "/_keyturn/faults", {"rules": [{"kind": "throttle", "count": 2, "action": "ListUsers"}]}
        )
        self.assertEqual(status, 200)
        for _ in range(2):
            with self.assertRaises(ClientError) as caught:
                iam.list_users()
            error = caught.exception.response
            self.assertEqual(error["Error"]["Code"], "Throttling")
            self.assertEqual(error["ResponseMetadata"]["HTTPStatusCode"], 400)
        iam.list_users()
        iam.create_user(UserName="carol")  # Another action is not matched.
        _, faults = self.emu.control("GET", "/_keyturn/faults")
        self.assertEqual(faults["rules"][0]["fired"], 2)
        _, counters = self.emu.control("GET", "/_keyturn/counters")
        self.assertEqual(counters["faults_injected"], 2)
        self.assertEqual(self.emu.control("DELETE", "/_keyturn/faults")[0], 200)
        self.assertEqual(self.emu.control("GET", "/_keyturn/faults")[1], {"rules": []})

    def test_retrying_client_recovers_and_fault_shapes(self) -> None:
        # boto3 retries throttling and 5xx, which shows the faults are classified so.
        iam = self.emu.client("iam", retries=3)
        ddb = self.emu.client("dynamodb", retries=3)
        org = self.emu.client("organizations", retries=3)
        self.emu.control(
            "POST",
            "/_keyturn/faults",
            {
                "rules": [
                    {"kind": "error", "status": 503, "count": 1, "service": "iam"},
                    {"kind": "throttle", "count": 1, "service": "dynamodb"},
                    {"kind": "throttle", "count": 1, "service": "organizations"},
                ]
            },
        )
        response = iam.list_users()
        self.assertEqual(response["ResponseMetadata"]["RetryAttempts"], 1)
        response = ddb.list_tables()
        self.assertEqual(response["ResponseMetadata"]["RetryAttempts"], 1)
        with self.assertRaises(ClientError) as caught:
            org.describe_organization()
        # Not a fault: no organization yet, after one retried throttle.
        self.assertEqual(caught.exception.response["ResponseMetadata"]["RetryAttempts"], 1)

        # Without retries, the error codes are the services' own.
        plain_ddb = self.emu.client("dynamodb")
        plain_org = self.emu.client("organizations")
        plain_iam = self.emu.client("iam")
        self.emu.control(
            "POST",
            "/_keyturn/faults",
            {
                "rules": [
                    {"kind": "throttle", "service": "dynamodb"},
                    {"kind": "throttle", "service": "organizations"},
                    {"kind": "error", "status": 500, "service": "iam"},
                ]
            },
        )
        with self.assertRaises(ClientError) as caught:
            plain_ddb.list_tables()
        self.assertEqual(caught.exception.response["Error"]["Code"], "ThrottlingException")
        with self.assertRaises(ClientError) as caught:
            plain_org.list_accounts()
        self.assertEqual(caught.exception.response["Error"]["Code"], "TooManyRequestsException")
        with self.assertRaises(ClientError) as caught:
            plain_iam.list_users()
        self.assertEqual(caught.exception.response["Error"]["Code"], "InternalFailure")
        self.assertEqual(caught.exception.response["ResponseMetadata"]["HTTPStatusCode"], 500)

    def test_latency_and_fraction(self) -> None:
        iam = self.emu.client("iam")
        self.emu.control(
            "POST", "/_keyturn/faults", {"rules": [{"kind": "latency", "latency_ms": 200, "count": 1}]}
        )
        start = time.monotonic()
        iam.list_users()
        self.assertGreaterEqual(time.monotonic() - start, 0.2)
        start = time.monotonic()
        iam.list_users()
        self.assertLess(time.monotonic() - start, 0.2)

        rules = {"rules": [{"kind": "throttle", "fraction": 0.5, "seed": 7, "action": "ListUsers"}]}
        outcomes = []
        for _ in range(2):
            self.emu.control("POST", "/_keyturn/faults", rules)
            run = []
            for _ in range(40):
                try:
                    iam.list_users()
                    run.append(True)
                except ClientError:
                    run.append(False)
            outcomes.append(run)
        self.assertEqual(outcomes[0], outcomes[1], "a seeded fraction repeats")
        self.assertTrue(5 < outcomes[0].count(False) < 35)

    def test_account_targeted_fault_and_counters(self) -> None:
        org = self.emu.client("organizations")
        org.create_organization(FeatureSet="ALL")
        status = org.create_account(AccountName="member", Email="member@example.com")
        member = status["CreateAccountStatus"]["AccountId"]
        sts = self.emu.client("sts")
        creds = sts.assume_role(
            RoleArn=f"arn:aws:iam::{member}:role/OrganizationAccountAccessRole",
            RoleSessionName="test",
        )["Credentials"]
        member_iam = self.emu.client(
            "iam",
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["SessionToken"],
        )
        member_iam.create_user(UserName="in-member")
        mgmt_iam = self.emu.client("iam")
        self.assertEqual([u["UserName"] for u in mgmt_iam.list_users()["Users"]], [])

        self.assertEqual(self.emu.control("POST", "/_keyturn/counters/reset")[0], 200)
        self.emu.control("POST", "/_keyturn/faults", {"rules": [{"kind": "throttle", "account": member}]})
        mgmt_iam.list_users()
        mgmt_iam.list_users()
        with self.assertRaises(ClientError) as caught:
            member_iam.list_users()
        self.assertEqual(caught.exception.response["Error"]["Code"], "Throttling")

        _, counters = self.emu.control("GET", "/_keyturn/counters")
        self.assertEqual(counters["total"], 3)
        self.assertEqual(counters["faults_injected"], 1)
        self.assertIn(
            {"service": "iam", "action": "ListUsers", "account": "123456789012", "count": 2},
            counters["requests"],
        )
        self.assertIn(
            {"service": "iam", "action": "ListUsers", "account": member, "count": 1},
            counters["requests"],
        )
        # JSON-protocol actions come from X-Amz-Target.
        self.emu.control("DELETE", "/_keyturn/faults")
        org.list_accounts()
        _, counters = self.emu.control("GET", "/_keyturn/counters")
        self.assertIn(
            {"service": "organizations", "action": "ListAccounts", "account": "123456789012", "count": 1},
            counters["requests"],
        )
        # Control calls are never counted.
        self.assertEqual(counters["total"], 4)
        # moto's CPU by action: the served ListUsers and ListAccounts, not the throttled
        # request (moto never saw it); a reset zeroes it.
        cpu = {(c["service"], c["action"]): c["micros"] for c in counters["cpu"]}
        self.assertEqual(set(cpu), {("iam", "ListUsers"), ("organizations", "ListAccounts")})
        self.assertTrue(all(micros > 0 for micros in cpu.values()), cpu)
        self.emu.control("POST", "/_keyturn/counters/reset")
        _, counters = self.emu.control("GET", "/_keyturn/counters")
        self.assertEqual((counters["total"], counters["cpu"]), (0, []))

    def test_requests_in_flight_are_counted_by_account(self) -> None:
        org = self.emu.client("organizations")
        org.create_organization(FeatureSet="ALL")
        sts = self.emu.client("sts")
        members = []
        for name in ("a", "b"):
            status = org.create_account(AccountName=name, Email=f"{name}@example.com")
            account = status["CreateAccountStatus"]["AccountId"]
            creds = sts.assume_role(
                RoleArn=f"arn:aws:iam::{account}:role/OrganizationAccountAccessRole",
                RoleSessionName="test",
            )["Credentials"]
            members.append((account, creds))
        self.emu.control("POST", "/_keyturn/counters/reset")
        self.emu.control(
            "POST", "/_keyturn/faults", {"rules": [{"kind": "latency", "latency_ms": 300}]}
        )
        self.addCleanup(self.emu.control, "DELETE", "/_keyturn/faults")

        def client(creds: dict[str, str]) -> Any:
            return self.emu.client(
                "iam",
                aws_access_key_id=creds["AccessKeyId"],
                aws_secret_access_key=creds["SecretAccessKey"],
                aws_session_token=creds["SessionToken"],
            )

        # Three requests at once in member a, one in member b (overlapping them), one
        # in the management account (not a member); then one more in b alone.
        (a, a_creds), (b, b_creds) = members
        calls = [client(a_creds) for _ in range(3)] + [client(b_creds), self.emu.client("iam")]
        barrier = threading.Barrier(len(calls))

        def call(iam: Any) -> None:
            barrier.wait()
            iam.list_users()

        threads = [threading.Thread(target=call, args=(iam,)) for iam in calls]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        client(b_creds).list_users()

        _, counters = self.emu.control("GET", "/_keyturn/counters")
        by_account = {m["account"]: m["max"] for m in counters["concurrency"]["max_in_flight"]}
        self.assertEqual(by_account, {a: 3, b: 1, "123456789012": 1})
        self.assertIn(
            {"service": "iam", "action": "ListUsers", "account": a, "max": 3},
            counters["concurrency"]["max_in_flight_by_action"],
        )
        self.assertEqual(len(counters["concurrency"]["max_in_flight_by_action"]), 3)
        self.assertEqual(counters["concurrency"]["max_member_accounts_in_flight"], 2)
        self.emu.control("POST", "/_keyturn/counters/reset")
        _, counters = self.emu.control("GET", "/_keyturn/counters")
        self.assertEqual(
            counters["concurrency"],
            {"max_in_flight": [], "max_in_flight_by_action": [], "max_member_accounts_in_flight": 0},
        )

    def test_assume_role_parameters_are_recorded_and_source_identity_can_be_refused(self) -> None:
        sts = self.emu.client("sts")
        role = "arn:aws:iam::111111111111:role/Keyturn"
        sts.assume_role(
            RoleArn=role, RoleSessionName="keyturn-c1-r1", ExternalId="ext", SourceIdentity="keyturn-c1"
        )
        status, body = self.emu.control(
            "POST", "/_keyturn/sts/assume-role", {"deny_source_identity": ["111111111111"]}
        )
        self.assertEqual((status, body), (200, {"deny_source_identity": ["111111111111"]}))
        with self.assertRaises(ClientError) as caught:
            sts.assume_role(RoleArn=role, RoleSessionName="again", SourceIdentity="keyturn-c1")
        self.assertEqual(caught.exception.response["Error"]["Code"], "AccessDenied")
        self.assertIn("sts:SetSourceIdentity", caught.exception.response["Error"]["Message"])
        # Without a source identity the same role is still assumed.
        sts.assume_role(RoleArn=role, RoleSessionName="plain")
        _, seen = self.emu.control("GET", "/_keyturn/sts/assume-role")
        self.assertEqual(
            seen["requests"],
            [
                {"RoleArn": role, "RoleSessionName": "keyturn-c1-r1", "ExternalId": "ext", "SourceIdentity": "keyturn-c1"},
                {"RoleArn": role, "RoleSessionName": "again", "ExternalId": "", "SourceIdentity": "keyturn-c1"},
                {"RoleArn": role, "RoleSessionName": "plain", "ExternalId": "", "SourceIdentity": ""},
            ],
        )
        status, body = self.emu.control("POST", "/_keyturn/sts/assume-role", {"deny_source_identity": "x"})
        self.assertEqual(status, 400)

    def test_bad_control_requests(self) -> None:
        status, body = self.emu.control("POST", "/_keyturn/faults", {"rules": [{"kind": "nope"}]})
        self.assertEqual(status, 400)
        self.assertIn("kind", body["error"])
        self.assertEqual(self.emu.control("GET", "/_keyturn/nothing")[0], 404)


class SerialTest(unittest.TestCase):
    def test_conditional_put_has_one_winner(self) -> None:
        emu = Emulator("--serial")
        self.addCleanup(emu.stop)
        ddb = emu.client("dynamodb")
        ddb.create_table(
            TableName="race",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        clients = [emu.client("dynamodb") for _ in range(20)]
        for round_no in range(20):
            barrier = threading.Barrier(len(clients))
            wins: list[int] = []
            errors: list[str] = []

            def race(worker: int) -> None:
                barrier.wait()
                try:
                    clients[worker].put_item(
                        TableName="race",
                        Item={"pk": {"S": f"round-{round_no}"}, "winner": {"N": str(worker)}},
                        ConditionExpression="attribute_not_exists(pk)",
                    )
                    wins.append(worker)
                except ClientError as err:
                    errors.append(err.response["Error"]["Code"])

            threads = [threading.Thread(target=race, args=(i,)) for i in range(len(clients))]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            self.assertEqual(len(wins), 1, f"round {round_no}: winners {wins}")
            self.assertEqual(set(errors), {"ConditionalCheckFailedException"})


class TransactionTest(unittest.TestCase):
    def test_transactions_are_all_or_nothing_and_survive_concurrency(self) -> None:
        emu = Emulator()
        self.addCleanup(emu.stop)
        ddb = emu.client("dynamodb")
        ddb.create_table(
            TableName="j",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        ddb.put_item(TableName="j", Item={"pk": {"S": "taken"}, "v": {"S": "old"}})

        def put(pk: str, v: str) -> dict[str, Any]:
            return {
                "Put": {
                    "TableName": "j",
                    "Item": {"pk": {"S": pk}, "v": {"S": v}},
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            }

        # A failed condition cancels the whole transaction: the first put is undone.
        with self.assertRaises(ClientError) as caught:
            ddb.transact_write_items(TransactItems=[put("fresh", "new"), put("taken", "new")])
        self.assertEqual(caught.exception.response["Error"]["Code"], "TransactionCanceledException")
        reasons = [r["Code"] for r in caught.exception.response["CancellationReasons"]]
        self.assertEqual(reasons, ["None", "ConditionalCheckFailed"])
        self.assertNotIn("Item", ddb.get_item(TableName="j", Key={"pk": {"S": "fresh"}}))
        item = ddb.get_item(TableName="j", Key={"pk": {"S": "taken"}})["Item"]
        self.assertEqual(item["v"], {"S": "old"})

        # Many writers at once (moto's own version deep-copied the table and failed with
        # HTTP 500 here): every transaction lands, nothing is lost.
        clients = [emu.client("dynamodb") for _ in range(8)]
        failures: list[str] = []

        def writer(w: int) -> None:
            for n in range(25):
                try:
                    clients[w].transact_write_items(
                        TransactItems=[put(f"w{w}-{n}-a", "x"), put(f"w{w}-{n}-b", "x")]
                    )
                    clients[w].put_item(TableName="j", Item={"pk": {"S": f"w{w}-{n}-c"}})
                except ClientError as err:
                    failures.append(err.response["Error"]["Code"])

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(len(clients))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual(failures, [])
        count = ddb.scan(TableName="j", Select="COUNT")["Count"]
        self.assertEqual(count, 1 + 8 * 25 * 3)


class QueryTest(unittest.TestCase):
    def test_queries_of_a_partition_answer_as_dynamodb_does(self) -> None:
        # server.py hands moto's Query only the items the key condition selects; the
        # answers (order, paging, the 1 MB page, filters, counts) must not change.
        emu = Emulator()
        self.addCleanup(emu.stop)
        ddb = emu.client("dynamodb")
        ddb.create_table(
            TableName="q",
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        # Two partitions; in "a", streams x and y, and y's items are large (100 KB
        # each: a 1 MB page holds nine of them).
        for n in range(30):
            ddb.put_item(TableName="q", Item={"pk": {"S": "a"}, "sk": {"S": f"x#{n:03}"}, "n": {"N": str(n)}})
            ddb.put_item(TableName="q", Item={"pk": {"S": "a"}, "sk": {"S": f"y#{n:03}"}, "pad": {"S": "p" * 100_000}})
            ddb.put_item(TableName="q", Item={"pk": {"S": "b"}, "sk": {"S": f"x#{n:03}"}})

        def query(prefix: str = "x#", **extra: Any) -> dict[str, Any]:
            return ddb.query(
                TableName="q",
                KeyConditionExpression="pk = :pk AND begins_with(sk, :p)",
                ExpressionAttributeValues={":pk": {"S": "a"}, ":p": {"S": prefix}},
                **extra,
            )

        def sort_keys(answer: dict[str, Any]) -> list[str]:
            return [item["sk"]["S"] for item in answer["Items"]]

        # The whole of stream x in one page.
        answer = query()
        self.assertEqual(sort_keys(answer), [f"x#{n:03}" for n in range(30)])
        self.assertEqual((answer["Count"], answer["ScannedCount"]), (30, 30))
        self.assertNotIn("LastEvaluatedKey", answer)
        # Newest first, one item, projected.
        answer = query(ScanIndexForward=False, Limit=1, ProjectionExpression="sk")
        self.assertEqual(answer["Items"], [{"sk": {"S": "x#029"}}])
        # Paging by Limit, or by the 1 MB page, returns every item once, in order.
        for prefix, extra, pages in (("x#", {"Limit": 7}, 5), ("y#", {}, 4)):
            seen: list[str] = []
            start: dict[str, Any] | None = None
            count = 0
            while True:
                page = query(prefix, **extra, **({"ExclusiveStartKey": start} if start else {}))
                seen += sort_keys(page)
                count += 1
                start = page.get("LastEvaluatedKey")
                if not start:
                    break
            self.assertEqual(seen, [f"{prefix}{n:03}" for n in range(30)])
            self.assertEqual(count, pages, prefix)
        # Other key conditions, and a filter, still answer as moto does.
        answer = ddb.query(
            TableName="q",
            KeyConditionExpression="pk = :pk AND sk BETWEEN :lo AND :hi",
            FilterExpression="n > :five",
            ExpressionAttributeValues={
                ":pk": {"S": "a"}, ":lo": {"S": "x#003"}, ":hi": {"S": "x#009"}, ":five": {"N": "5"},
            },
        )
        self.assertEqual(sort_keys(answer), ["x#006", "x#007", "x#008", "x#009"])
        self.assertEqual(answer["ScannedCount"], 7)
        answer = ddb.query(
            TableName="q",
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": "b"}},
        )
        self.assertEqual(answer["Count"], 30)
        answer = ddb.query(
            TableName="q",
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": "none"}},
        )
        self.assertEqual((answer["Items"], answer["Count"]), ([], 0))


class AccessKeyLastUsedTest(unittest.TestCase):
    def test_answers_are_the_same_with_and_without_the_patch(self) -> None:
        # server.py answers GetAccessKeyLastUsed for a key of the asking account's own
        # users without moto's walk over every key of every account, and leaves every
        # other id to moto. The answers must not change: this runs moto in this process
        # (mock_aws), asks each question of each account with moto's own method and with
        # the patched one, and compares.
        from moto import mock_aws
        from moto.iam import models

        server = load_server()

        original = models.IAMBackend.get_access_key_last_used
        self.addCleanup(setattr, models.IAMBackend, "get_access_key_last_used", original)
        server.patch_access_key_last_used()
        patched = models.IAMBackend.get_access_key_last_used
        self.assertIsNot(patched, original)
        walk = models.IAMBackend.get_all_access_keys_for_all_users
        self.addCleanup(setattr, models.IAMBackend, "get_all_access_keys_for_all_users", walk)
        walks = [0]

        def counting_walk(backend: Any) -> Any:
            walks[0] += 1
            return walk(backend)

        models.IAMBackend.get_all_access_keys_for_all_users = counting_walk

        mock = mock_aws()
        mock.start()
        self.addCleanup(mock.stop)

        def client(service: str, **credentials: str) -> Any:
            credentials = credentials or {
                "aws_access_key_id": "testing",
                "aws_secret_access_key": "testing",
            }
            return boto3.client(service, region_name="us-east-1", **credentials)

        # The management account (the dummy key): alice has a key never used and one
        # used (a request signed with it); dave's key outlived him (a new dave has none);
        # erin was renamed after her key was made.
        iam = client("iam")
        iam.create_user(UserName="alice")
        never = iam.create_access_key(UserName="alice")["AccessKey"]["AccessKeyId"]
        used = iam.create_access_key(UserName="alice")["AccessKey"]
        client(
            "sts", aws_access_key_id=used["AccessKeyId"], aws_secret_access_key=used["SecretAccessKey"]
        ).get_caller_identity()
        iam.create_user(UserName="dave")
        orphan = iam.create_access_key(UserName="dave")["AccessKey"]["AccessKeyId"]
        iam.delete_user(UserName="dave")
        iam.create_user(UserName="dave")
        iam.create_user(UserName="erin")
        renamed = iam.create_access_key(UserName="erin")["AccessKey"]["AccessKeyId"]
        iam.update_user(UserName="erin", NewUserName="erin2")

        # Another account, reached with STS temporary credentials: carol's key.
        creds = client("sts").assume_role(
            RoleArn="arn:aws:iam::210987654321:role/Keyturn", RoleSessionName="test"
        )["Credentials"]
        member_iam = client(
            "iam",
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["SessionToken"],
        )
        member_iam.create_user(UserName="carol")
        carol = member_iam.create_access_key(UserName="carol")["AccessKey"]["AccessKeyId"]
        temporary = creds["AccessKeyId"]
        unknown = "AKIAIOSFODNN7EXAMPLE"

        def ask(asker: Any, access_key_id: str) -> tuple[Any, ...]:
            try:
                answer = asker.get_access_key_last_used(AccessKeyId=access_key_id)
            except ClientError as err:
                error = err.response["Error"]
                status = err.response["ResponseMetadata"]["HTTPStatusCode"]
                return ("error", error.get("Code"), error.get("Message"), status)
            answer.pop("ResponseMetadata")
            return ("ok", answer)

        ids = {
            "never used": never, "used": used["AccessKeyId"], "deleted user's": orphan,
            "renamed user's": renamed, "other account's": carol, "sts temporary": temporary,
            "unknown": unknown,
        }
        answers: dict[tuple[str, str], tuple[Any, ...]] = {}
        for asker_name, asker in (("management", iam), ("member", member_iam)):
            for name, access_key_id in ids.items():
                models.IAMBackend.get_access_key_last_used = original
                moto_answer = ask(asker, access_key_id)
                models.IAMBackend.get_access_key_last_used = patched
                walks[0] = 0
                patched_answer = ask(asker, access_key_id)
                self.assertEqual(patched_answer, moto_answer, f"{name} key asked by {asker_name}")
                answers[(asker_name, name)] = patched_answer
                # A key of the asking account's own user is answered without the walk.
                own = (asker_name, name) in {
                    ("management", "never used"), ("management", "used"), ("member", "other account's"),
                }
                self.assertEqual(walks[0], 0 if own else 1, f"{name} key asked by {asker_name}")

        # And the answers are what moto answers.
        _, never_answer = answers[("management", "never used")]
        self.assertEqual(never_answer["UserName"], "alice")
        self.assertNotIn("LastUsedDate", never_answer["AccessKeyLastUsed"])
        _, used_answer = answers[("management", "used")]
        self.assertEqual(
            (used_answer["AccessKeyLastUsed"]["ServiceName"], used_answer["AccessKeyLastUsed"]["Region"]),
            ("sts", "us-east-1"),
        )
        self.assertIn("LastUsedDate", used_answer["AccessKeyLastUsed"])
        for asker_name in ("management", "member"):
            self.assertEqual(answers[(asker_name, "other account's")][1]["UserName"], "carol")
            self.assertEqual(answers[(asker_name, "renamed user's")][1]["UserName"], "erin")
            for name in ("deleted user's", "sts temporary", "unknown"):
                self.assertEqual(answers[(asker_name, name)][:2], ("error", "NoSuchEntity"), name)


class DynamoWritePatchTest(unittest.TestCase):
    def test_writes_answer_the_same_with_and_without_the_patches(self) -> None:
        # server.py sizes a new item's attributes once (patch_item_size) and remembers
        # parsed condition expressions (patch_condition_cache). This runs moto in this
        # process (mock_aws), makes the same writes and reads with moto's originals and
        # with the patches, and compares every answer and the table's contents.
        from moto import mock_aws
        from moto.dynamodb.comparisons import ConditionExpressionParser
        from moto.dynamodb.models.dynamo_type import Item

        server = load_server()

        originals = (Item.__init__, ConditionExpressionParser.parse)
        self.addCleanup(setattr, Item, "__init__", originals[0])
        self.addCleanup(setattr, ConditionExpressionParser, "parse", originals[1])
        server.patch_item_size()
        server.patch_condition_cache()
        patched = (Item.__init__, ConditionExpressionParser.parse)
        self.assertIsNot(patched[0], originals[0])
        self.assertIsNot(patched[1], originals[1])

        def s(text: str) -> dict[str, str]:
            return {"S": text}

        def item(n: int, **extra: Any) -> dict[str, Any]:
            return {
                "pk": s("C#c"), "sk": s(f"E#user#{n:020}"), "account_id": s("111122223333"),
                "at": s(f"2026-01-01T00:00:00Z#{n}"), "payload": s("{}"), **extra,
            }

        def put(body: dict[str, Any], **extra: Any) -> dict[str, Any]:
            return {
                "TableName": "j", "Item": body, "ConditionExpression": "attribute_not_exists(#pk)",
                "ExpressionAttributeNames": {"#pk": "pk"}, **extra,
            }

        def transact(*bodies: dict[str, Any]) -> dict[str, Any]:
            return {"TransactItems": [{"Put": put(body)} for body in bodies]}

        odd = item(
            7, flag={"BOOL": False}, nothing={"NULL": True}, blob={"B": b"hello"},
            tags={"SS": ["a", "b"]}, m={"M": {"k": {"N": "1"}}}, l={"L": [s("x")]},
        )
        requests: list[tuple[str, dict[str, Any]]] = [
            ("put_item", put(item(1))),
            ("put_item", put(item(1))),  # the condition fails
            ("put_item", put(item(1), ReturnValuesOnConditionCheckFailure="ALL_OLD")),
            ("put_item", {"TableName": "j", "Item": item(1, extra=s("x")), "ReturnValues": "ALL_OLD"}),
            ("put_item", put(item(2), ExpressionAttributeNames={"#pk": "pk", "#x": "x"})),  # unused name
            ("put_item", put(item(2), ConditionExpression="#pk = :v", ExpressionAttributeValues={":v": s("z")})),
            ("put_item", put(item(2), ExpressionAttributeValues={":v": s("z")})),  # unused value
            ("put_item", put(item(2), ConditionExpression="attribute_not_exists(#pk) AND")),  # syntax
            ("put_item", put(item(3, big=s("x" * 405_000)))),  # over moto's size limit
            ("put_item", put(item(4, big=s("x" * 399_000)))),  # under it
            ("put_item", put(odd)),
            ("transact_write_items", transact(item(10), item(11), item(12))),
            ("transact_write_items", transact(item(13), item(10))),  # the second item fails
            ("transact_write_items", transact(item(14), item(14))),  # one item twice
            ("put_item", put(item(2))),
        ]

        def variant(functions: tuple[Any, Any]) -> list[Any]:
            Item.__init__, ConditionExpressionParser.parse = functions
            mock = mock_aws()
            mock.start()
            try:
                ddb = boto3.client(
                    "dynamodb", region_name="us-east-1",
                    aws_access_key_id="testing", aws_secret_access_key="testing",
                )
                ddb.create_table(
                    TableName="j",
                    KeySchema=[
                        {"AttributeName": "pk", "KeyType": "HASH"},
                        {"AttributeName": "sk", "KeyType": "RANGE"},
                    ],
                    AttributeDefinitions=[
                        {"AttributeName": name, "AttributeType": "S"}
                        for name in ("pk", "sk", "account_id", "at")
                    ],
                    GlobalSecondaryIndexes=[{
                        "IndexName": "by_account",
                        "KeySchema": [
                            {"AttributeName": "account_id", "KeyType": "HASH"},
                            {"AttributeName": "at", "KeyType": "RANGE"},
                        ],
                        "Projection": {"ProjectionType": "ALL"},
                    }],
                    BillingMode="PAY_PER_REQUEST",
                )
                answers: list[Any] = []
                for action, body in requests:
                    try:
                        answer = getattr(ddb, action)(**body)
                        answer.pop("ResponseMetadata", None)
                        answers.append((action, "ok", answer))
                    except ClientError as err:
                        error = err.response["Error"]
                        reasons = err.response.get("CancellationReasons")
                        answers.append((action, error.get("Code"), error.get("Message"), reasons))
                    except Exception as err:  # noqa: BLE001 (what moto lets escape: HTTP 500)
                        answers.append((action, "raised", f"{type(err).__name__}: {err}"))
                scan = ddb.scan(TableName="j")["Items"]
                answers.append(("contents", sorted(scan, key=lambda i: i["sk"]["S"])))
                by_account = ddb.query(
                    TableName="j", IndexName="by_account",
                    KeyConditionExpression="account_id = :a",
                    ExpressionAttributeValues={":a": s("111122223333")},
                )["Items"]
                answers.append(("index", by_account))
                return answers
            finally:
                mock.stop()

        moto_answers = variant(originals)
        patched_answers = variant(patched)
        # Twice with the patches: the second time from the remembered parses.
        self.assertEqual(variant(patched), patched_answers)
        for (action, body), ours, theirs in zip(requests, patched_answers, moto_answers):
            self.assertEqual(ours, theirs, f"{action} {json.dumps(body, default=str)[:200]}")
        self.assertEqual(patched_answers[-2:], moto_answers[-2:], "the table's contents")
        # The answers are moto's: a write per item, the failures where moto fails.
        codes = [answer[1] for answer in patched_answers[: len(requests)]]
        self.assertEqual(codes[:4], ["ok", "ConditionalCheckFailedException", "ConditionalCheckFailedException", "ok"])
        self.assertEqual(codes[8:14], ["ValidationException", "ok", "ok", "ok", "TransactionCanceledException", "ValidationException"])
        # Items 1, 2, 4, the odd one and the first transaction's three.
        self.assertEqual(len(patched_answers[-2][1]), 7)


class DirectDispatchTest(unittest.TestCase):
    def test_answers_are_the_flask_apps_byte_for_byte(self) -> None:
        # server.py answers POST / of iam, sts, organizations and dynamodb without Flask
        # (DirectDispatch). This sends the same raw requests, on fresh moto state with
        # the same random seed, to moto's dispatcher and to DirectDispatch, and compares
        # status, headers and body (times normalised).
        import base64
        import re
        import zlib

        from moto.moto_api._internal import mock_random
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
        from werkzeug.test import EnvironBuilder

        server = load_server()
        dispatcher = DomainDispatcherApplication(create_backend_app)
        for service in server.DirectDispatch.SERVICES:
            dispatcher.app_instances[service] = create_backend_app(service)
        direct = server.DirectDispatch(dispatcher)
        served = {"direct": 0}
        for key, handler in list(direct.handlers.items()):
            def counting(*args: Any, _handler: Any = handler) -> Any:
                served["direct"] += 1
                return _handler(*args)
            direct.handlers[key] = counting

        form = "application/x-www-form-urlencoded; charset=utf-8"

        def query(service: str, body: str, **headers: str) -> tuple[str, str, dict[str, str]]:
            return service, body, {"Content-Type": form, **headers}

        def json_call(service: str, target: str, body: Any, version: str = "1.0") -> tuple[str, str, dict[str, str]]:
            text = body if isinstance(body, str) else json.dumps(body)
            return service, text, {
                "Content-Type": f"application/x-amz-json-{version}", "X-Amz-Target": target,
            }

        def ddb(action: str, body: Any) -> tuple[str, str, dict[str, str]]:
            return json_call("dynamodb", f"DynamoDB_20120810.{action}", body)

        def org(action: str, body: Any) -> tuple[str, str, dict[str, str]]:
            return json_call("organizations", f"AWSOrganizationsV20161128.{action}", body, "1.1")

        iam = "Version=2010-05-08&Action="
        item = {"pk": {"S": "a"}, "sk": {"S": "1"}, "n": {"N": "5"}}
        put_new = {"TableName": "t", "Item": item, "ConditionExpression": "attribute_not_exists(pk)"}
        requests = [
            query("iam", iam + "CreateUser&UserName=u1"),
            query("iam", iam + "CreateUser&UserName=u1"),  # 409 EntityAlreadyExists
            query("iam", iam + "CreateAccessKey&UserName=u1"),
            query("iam", iam + "ListAccessKeys&UserName=u1"),
            query("iam", iam + "GetUser&UserName=nobody"),  # 404
            query("iam", iam + "GetAccountAuthorizationDetails&Filter.member.1=User"),
            query("iam", iam + "GenerateCredentialReport"),
            query("iam", iam + "GenerateCredentialReport"),
            query("iam", iam + "GetCredentialReport"),
            query("iam", iam + "UpdateAccessKey&UserName=u1&AccessKeyId=AKIANOPE&Status=Inactive"),
            query("iam", iam + "ListUsers", Origin="https://example.com"),  # through Flask
            query("sts", "Version=2011-06-15&Action=GetCallerIdentity"),
            query("sts", "Version=2011-06-15&Action=AssumeRole&RoleSessionName=s"
                  "&RoleArn=arn%3Aaws%3Aiam%3A%3A111111111111%3Arole%2Fr"),
            query("sts", "Version=2011-06-15&Action=AssumeRole"),  # moto raises: HTTP 500
            org("CreateOrganization", {"FeatureSet": "ALL"}),
            org("ListAccounts", {}),
            org("DescribeAccount", {"AccountId": "000000000000"}),  # not found
            ddb("CreateTable", {
                "TableName": "t", "BillingMode": "PAY_PER_REQUEST",
                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
                "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"}],
            }),
            ddb("PutItem", put_new),
            ddb("PutItem", put_new),  # the condition fails
            ddb("GetItem", {"TableName": "t", "Key": {"pk": {"S": "a"}, "sk": {"S": "1"}}}),
            ddb("Query", {"TableName": "t", "KeyConditionExpression": "pk = :p", "ExpressionAttributeValues": {":p": {"S": "a"}}}),
            ddb("TransactWriteItems", {"TransactItems": [{"Put": put_new}]}),  # cancelled
            ddb("GetItem", {"TableName": "missing", "Key": {"pk": {"S": "a"}}}),  # no such table
            ddb("PutItem", "{not json"),
            ddb("NoSuchAction", {}),
        ]
        time_like = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?|\b1\d{9}(\.\d+)?\b")
        # moto draws STS session credentials from an unseeded source.
        secret_like = re.compile(rb"<(SessionToken|SecretAccessKey)>[^<]*</")
        # The credential report (base64 CSV) holds times too.
        report = re.compile(rb"<Content>([^<]*)</Content>")

        def normalise(content: bytes) -> bytes:
            content = report.sub(
                lambda m: b"<Content>" + base64.b64decode(m.group(1)) + b"</Content>", content
            )
            return secret_like.sub(rb"<\1>SECRET</", time_like.sub(b"TIME", content))

        def answers(app: Any) -> list[Any]:
            out: list[Any] = []

            def call(path: str, service: str, body: str, headers: dict[str, str]) -> None:
                environ = EnvironBuilder(
                    method="POST", path=path, base_url="http://127.0.0.1:5000", data=body.encode(),
                    headers={
                        **headers, "X-Amz-Date": "20260101T000000Z",
                        "Authorization": f"AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE/20260101/us-east-1/{service}/aws4_request, SignedHeaders=host;x-amz-date, Signature=0",
                    },
                ).get_environ()
                reply: dict[str, Any] = {}

                def start_response(status: str, response_headers: list[tuple[str, str]], exc_info: Any = None) -> None:
                    reply["status"] = status
                    reply["headers"] = response_headers

                try:
                    result = app(environ, start_response)
                except Exception as err:  # noqa: BLE001 (what moto lets escape: HTTP 500)
                    out.append(("raised", [], f"{type(err).__name__}: {err}".encode()))
                    return
                try:
                    content = b"".join(result)
                finally:
                    getattr(result, "close", lambda: None)()
                # A time's text varies (a float's digits): the length and DynamoDB's
                # checksum must be the body's, the rest of the headers the same.
                by_name = {k.lower(): v for k, v in reply["headers"]}
                self.assertEqual(by_name.get("content-length"), str(len(content)))
                if "x-amz-crc32" in by_name:
                    self.assertEqual(by_name["x-amz-crc32"], str(zlib.crc32(content)))
                headers = [
                    (k, v) for k, v in reply["headers"]
                    if k.lower() not in ("date", "content-length", "x-amz-crc32")
                ]
                out.append((reply["status"], headers, normalise(content)))

            call("/moto-api/reset", "iam", "", {})
            mock_random.seed(20261127)
            for service, body, headers in requests:
                call("/", service, body, headers)
            return out[1:]

        theirs = answers(dispatcher)
        self.assertEqual(served["direct"], 0)
        ours = answers(direct)
        # Every request but the one with an Origin header took the direct path.
        self.assertEqual(served["direct"], len(requests) - 1)
        for request, mine, flask in zip(requests, ours, theirs):
            self.assertEqual(mine, flask, f"{request[0]} {request[1][:80]} {request[2]}")
        # The answers are moto's, errors included (what moto lets escape is HTTP 500).
        statuses = [answer[0].split()[0] for answer in ours]
        self.assertEqual(statuses, [
            "200", "409", "200", "200", "404", "200", "200", "200", "200", "404", "200",  # iam
            "200", "200", "raised",  # sts
            "200", "200", "400",  # organizations
            "200", "200", "400", "200", "200", "400", "400", "raised", "raised",  # dynamodb
        ])
        self.assertIn(b"ConditionalCheckFailedException", ours[19][2])
        self.assertIn(b"TransactionCanceledException", ours[22][2])
        self.assertIn(b"<Content>user,arn,", ours[8][2])


class StdinTest(unittest.TestCase):
    def test_stdin_eof_stops_the_process(self) -> None:
        emu = Emulator()
        self.addCleanup(emu.stop)
        assert emu.proc.stdin is not None
        emu.proc.stdin.close()
        self.assertEqual(emu.proc.wait(10), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
