"""The keyturn test emulator: moto's AWS emulator plus the control endpoints moto lacks.

Runs moto's WSGI application in this process (as moto's own ThreadedMotoServer does),
served by granian (see ``serve``), behind a small WSGI middleware that adds, under
``/_keyturn/``:

- ``GET /_keyturn/health``: liveness.
- ``POST /_keyturn/iam/access-key``: backdate an IAM access key and set or clear its
  last-used data (moto always creates keys "now").
- ``GET|POST|DELETE /_keyturn/faults``: fault injection (throttling, 5xx, latency),
  answered in the wire format of the service's protocol so the AWS SDKs classify
  the faults as they would real ones.
- ``GET /_keyturn/counters`` and ``POST /_keyturn/counters/reset``: request counts by
  service, action and account.
- ``GET /_keyturn/process``: CPU time and peak memory of this process.
- ``GET /_keyturn/sts/assume-role``: the parameters of every AssumeRole request
  (role, session name, external id, source identity), which moto does not keep;
  ``POST /_keyturn/sts/assume-role`` with ``{"deny_source_identity": [account ids]}``
  makes the roles of those accounts refuse ``sts:SetSourceIdentity`` as a trust policy
  without it would (moto checks no trust policy).

Usage::

    python server.py [--host 127.0.0.1] [--port 0] [--serial] [--exit-on-stdin-eof]

When it is ready it prints exactly one line, ``KEYTURN_EMULATOR_READY http://HOST:PORT``,
to stdout. See README.md beside this file for the moto internals this relies on.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import logging
import os
import random
import re
import resource
import sys
import threading
import time
import uuid
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs, unquote_plus

# The moto version whose internals this program reaches into. The requirements file
# pins the same version; a mismatch is refused at start-up rather than misbehaving.
EXPECTED_MOTO_VERSION = "5.2.5"
# The same for granian, the HTTP server (see serve()).
EXPECTED_GRANIAN_VERSION = "2.8.7"

DEFAULT_ACCOUNT_ID = "123456789012"
CONTROL_PREFIX = "/_keyturn/"
# Request threads: more than any client here runs at once (keyturn 16 accounts with a
# few requests each, Cloud Custodian up to 32 processes), so none waits for a thread.
WORKER_THREADS = 96

# Services that speak a JSON protocol and their JSON content type. Query-protocol
# services (iam, sts, sns) answer XML.
JSON_CONTENT_TYPE = {
    "dynamodb": "application/x-amz-json-1.0",
    "organizations": "application/x-amz-json-1.1",
    "secretsmanager": "application/x-amz-json-1.1",
}

# The throttling error code each JSON-protocol service really sends.
JSON_THROTTLE_TYPE = {
    "dynamodb": "com.amazonaws.dynamodb.v20120810#ThrottlingException",
    "organizations": "TooManyRequestsException",
}

# XML namespaces of the query-protocol services' error documents.
QUERY_NAMESPACE = {
    "iam": "https://iam.amazonaws.com/doc/2010-05-08/",
    "sts": "https://sts.amazonaws.com/doc/2011-06-15/",
    "sns": "http://sns.amazonaws.com/doc/2010-03-31/",
}

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
ACTION_IN_FORM = re.compile(rb"(?:^|&)Action=([^&]*)")
ACTION_IN_QUERY = re.compile(r"(?:^|&)Action=([^&]*)")

log = logging.getLogger("keyturn-emulator")


# --------------------------------------------------------------------------------------
# Request classification.
# --------------------------------------------------------------------------------------


class AccountResolver:
    """Maps a signing access key id to its account, as moto does, but cheaply.

    moto's own ``get_account_id_from`` scans every account and partition (and its
    ``BackendDict.__getitem__`` copies the key list under a lock), which is fine once
    per request inside moto but too slow to repeat here. This resolver caches the
    answer: a cached account is re-checked with one dictionary lookup, and a key that
    no account knows (such as the dummy ``testing`` key, which maps to the default
    account) is remembered as unknown. Key ids are random, so a key that was unknown
    does not become known later; the cache is cleared on ``/moto-api/reset`` anyway.
    """

    def __init__(self) -> None:
        self._known: dict[str, tuple[str, str]] = {}
        self._unknown: set[str] = set()
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._known.clear()
            self._unknown.clear()

    def account_for(self, access_key_id: str) -> str:
        from moto.iam.models import iam_backends

        hit = self._known.get(access_key_id)
        if hit is not None:
            account_id, partition = hit
            backend = _existing_backend(iam_backends, account_id, partition)
            if backend is not None and access_key_id in backend.access_keys:
                return account_id
        elif access_key_id in self._unknown:
            return DEFAULT_ACCOUNT_ID

        found = _scan_for_access_key(iam_backends, access_key_id)
        with self._lock:
            if found is None:
                self._known.pop(access_key_id, None)
                if len(self._unknown) > 100_000:
                    self._unknown.clear()
                self._unknown.add(access_key_id)
                return DEFAULT_ACCOUNT_ID
            self._known[access_key_id] = found
            return found[0]


def _existing_backend(backends: Any, account_id: str, partition: str) -> Any:
    """Returns an existing IAM backend without creating one (plain dict access)."""
    account = dict.get(backends, account_id)
    if account is None:
        return None
    return dict.get(account, partition)


def _scan_for_access_key(backends: Any, access_key_id: str) -> tuple[str, str] | None:
    """Finds (account, partition) of an access key, without creating backends."""
    for account_id, account in list(dict.items(backends)):
        for partition, backend in list(dict.items(account)):
            if access_key_id in backend.access_keys:
                return account_id, partition
    return None


class Classified:
    """What a request is: service, action and account, for counters and faults."""

    __slots__ = ("service", "action", "account", "signed", "json_protocol", "content_type")

    def __init__(self) -> None:
        self.service = ""
        self.action = ""
        self.account = DEFAULT_ACCOUNT_ID
        self.signed = False
        self.json_protocol = False
        self.content_type = ""


def classify(environ: dict[str, Any], resolver: AccountResolver) -> Classified:
    """Classifies a request; may buffer a form body and put back an identical copy."""
    c = Classified()
    auth = environ.get("HTTP_AUTHORIZATION", "")
    access_key_id = ""
    # SigV4: "AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/SERVICE/aws4_request, ...".
    start = auth.find("Credential=")
    if start >= 0:
        end = auth.find(",", start)
        scope = auth[start + 11 : end if end >= 0 else len(auth)].strip().split("/")
        if len(scope) == 5:
            access_key_id = scope[0]
            c.service = scope[3].lower()
            c.signed = True
    if not c.signed:
        path = environ.get("PATH_INFO", "")
        c.service = "moto-api" if path.startswith("/moto-api") else "unsigned"

    target = environ.get("HTTP_X_AMZ_TARGET")
    if target:
        c.json_protocol = True
        c.action = target.rpartition(".")[2]
        c.content_type = environ.get("CONTENT_TYPE", "")
    else:
        c.action = _query_action(environ)
        if not c.action and not c.signed:
            c.action = environ.get("PATH_INFO", "")

    explicit = environ.get("HTTP_X_MOTO_ACCOUNT_ID")
    forced = os.environ.get("MOTO_ACCOUNT_ID")
    if forced:
        c.account = forced
    elif explicit:
        c.account = explicit
    elif access_key_id:
        c.account = resolver.account_for(access_key_id)
    return c


def _query_action(environ: dict[str, Any]) -> str:
    """The Action of a query-protocol request, from its form body or query string."""
    if environ.get("CONTENT_TYPE", "").startswith(FORM_CONTENT_TYPE):
        body = _buffer_body(environ)
        match = ACTION_IN_FORM.search(body)
        if match:
            return unquote_plus(match.group(1).decode("utf-8", "replace"))
    query = environ.get("QUERY_STRING", "")
    if query:
        match = ACTION_IN_QUERY.search(query)
        if match:
            return unquote_plus(match.group(1))
    return ""


def _buffer_body(environ: dict[str, Any]) -> bytes:
    """Reads the request body and hands the app an identical, fresh wsgi.input."""
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH")
    if length:
        body = stream.read(int(length))
    elif environ.get("wsgi.input_terminated") or "chunked" in environ.get(
        "HTTP_TRANSFER_ENCODING", ""
    ).lower():
        body = stream.read()
        environ.pop("HTTP_TRANSFER_ENCODING", None)
    else:
        body = b""
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    return body


# --------------------------------------------------------------------------------------
# Faults.
# --------------------------------------------------------------------------------------


class FaultRule:
    """One fault-injection rule, as posted to /_keyturn/faults."""

    KINDS = ("throttle", "error", "latency")

    def __init__(self, spec: dict[str, Any]) -> None:
        if not isinstance(spec, dict):
            raise ValueError("a rule must be a JSON object")
        unknown = set(spec) - {
            "kind", "status", "latency_ms", "count", "fraction", "seed",
            "service", "action", "account",
        }
        if unknown:
            raise ValueError(f"unknown rule fields: {sorted(unknown)}")
        self.spec = spec
        self.kind = spec.get("kind")
        if self.kind not in self.KINDS:
            raise ValueError(f"kind must be one of {self.KINDS}, got {self.kind!r}")
        self.status = int(spec.get("status") or 500)
        if self.kind == "error" and self.status not in (500, 503):
            raise ValueError("an error rule's status must be 500 or 503")
        self.latency_ms = float(spec.get("latency_ms") or 0)
        if self.kind == "latency" and self.latency_ms <= 0:
            raise ValueError("a latency rule needs a positive latency_ms")
        count = spec.get("count")
        self.count = None if count is None else int(count)
        if self.count is not None and self.count < 0:
            raise ValueError("count must not be negative")
        fraction = spec.get("fraction")
        self.fraction = None if fraction is None else float(fraction)
        if self.fraction is not None and not 0.0 <= self.fraction <= 1.0:
            raise ValueError("fraction must be between 0 and 1")
        self.rng = random.Random(int(spec.get("seed") or 0))
        self.service = spec.get("service")
        self.action = spec.get("action")
        self.account = spec.get("account")
        self.fired = 0
        self.matched = 0

    def matches(self, c: Classified) -> bool:
        return (
            (self.service is None or self.service == c.service)
            and (self.action is None or self.action == c.action)
            and (self.account is None or self.account == c.account)
        )

    def try_fire(self) -> bool:
        """Decides whether the rule fires for a matching request (under the faults lock)."""
        self.matched += 1
        if self.count is not None and self.fired >= self.count:
            return False
        if self.fraction is not None and self.rng.random() >= self.fraction:
            return False
        self.fired += 1
        return True

    def describe(self) -> dict[str, Any]:
        return {**self.spec, "matched": self.matched, "fired": self.fired}


def fault_response(kind: str, status: int, c: Classified) -> tuple[str, list[tuple[str, str]], bytes]:
    """The error the real service sends for a throttle or 5xx, in its protocol."""
    request_id = str(uuid.uuid4())
    if kind == "throttle":
        status = 400
    if c.json_protocol:
        if kind == "throttle":
            error_type = JSON_THROTTLE_TYPE.get(c.service, "ThrottlingException")
            message = "Rate exceeded"
        elif status == 503:
            error_type, message = "ServiceUnavailable", "Service is unavailable"
        else:
            error_type, message = "InternalFailure", "Internal failure"
        content_type = c.content_type
        if not content_type.startswith("application/x-amz-json-1."):
            content_type = JSON_CONTENT_TYPE.get(c.service, "application/x-amz-json-1.1")
        body = json.dumps({"__type": error_type, "message": message}).encode()
    else:
        if kind == "throttle":
            error_type, code, message = "Sender", "Throttling", "Rate exceeded"
        elif status == 503:
            error_type, code, message = "Receiver", "ServiceUnavailable", "Service is unavailable"
        else:
            error_type, code, message = "Receiver", "InternalFailure", "Internal failure"
        namespace = QUERY_NAMESPACE.get(c.service)
        xmlns = f' xmlns="{namespace}"' if namespace else ""
        body = (
            f"<ErrorResponse{xmlns}><Error><Type>{error_type}</Type><Code>{code}</Code>"
            f"<Message>{message}</Message></Error><RequestId>{request_id}</RequestId>"
            "</ErrorResponse>"
        ).encode()
        content_type = "text/xml"
    reason = {400: "Bad Request", 500: "Internal Server Error", 503: "Service Unavailable"}
    headers = [
        ("Content-Type", content_type),
        ("Content-Length", str(len(body))),
        ("x-amzn-RequestId", request_id),
    ]
    return f"{status} {reason[status]}", headers, body


# --------------------------------------------------------------------------------------
# Backdating access keys.
# --------------------------------------------------------------------------------------


def parse_utc(value: Any, field: str) -> dt.datetime:
    """Parses an RFC 3339 timestamp into the naive UTC datetime moto stores."""
    if not isinstance(value, str):
        raise ValueError(f"{field} must be an RFC 3339 string")
    try:
        parsed = dt.datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError as err:
        raise ValueError(f"{field} is not an RFC 3339 timestamp: {value!r}") from err
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return parsed


def set_access_key(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Sets an IAM access key's creation date and/or last-used data in moto's backend."""
    from moto.iam.models import AccessKeyLastUsed, iam_backends

    access_key_id = body.get("access_key_id")
    if not isinstance(access_key_id, str) or not access_key_id:
        return 400, {"error": "access_key_id is required"}
    create_date = None
    if body.get("create_date") is not None:
        create_date = parse_utc(body["create_date"], "create_date")
    last_used_given = "last_used" in body
    last_used = None
    if last_used_given and body["last_used"] is not None:
        spec = body["last_used"]
        if not isinstance(spec, dict):
            return 400, {"error": "last_used must be an object or null"}
        for field in ("date", "service", "region"):
            if not isinstance(spec.get(field), str):
                return 400, {"error": f"last_used.{field} is required"}
        last_used = AccessKeyLastUsed(
            timestamp=parse_utc(spec["date"], "last_used.date"),
            service=spec["service"],
            region=spec["region"],
        )

    for account_id, account in list(dict.items(iam_backends)):
        for backend in list(dict.values(account)):
            for user in list(backend.users.values()):
                for key in user.access_keys:
                    if key.access_key_id != access_key_id:
                        continue
                    if create_date is not None:
                        key.create_date = create_date
                    if last_used_given:
                        key.last_used = last_used
                    return 200, {"account_id": account_id, "user_name": user.name}
    return 404, {"error": f"no IAM user owns an access key with id {access_key_id}"}


def patch_transact_write_items() -> None:
    """Makes DynamoDB TransactWriteItems back up only the items it touches.

    moto 5.2.5 deep-copies every table a transaction names before it starts, so that it
    can put the whole table back if an operation fails. That costs a copy of the whole
    table per transaction (a journal's table grows with every event), and under
    concurrent requests the copy races with other writers: it fails with HTTP 500
    (the table changes while it is copied), and a rollback would put back a table that
    misses other requests' writes. This replacement keeps moto's semantics (conditions,
    one operation per item, all or nothing, the same errors) and backs up, before each
    operation, the one item it touches; a rollback restores those items alone.
    """
    from moto.dynamodb import models
    from moto.dynamodb.exceptions import (
        ConditionalCheckFailed,
        MockValidationException,
        MultipleTransactionsException,
        TooManyTransactionsException,
        TransactionCanceledException,
        TransactWriteSingleOpException,
    )

    if not hasattr(models.DynamoDBBackend, "transact_write_items"):
        raise SystemExit("moto's DynamoDB backend changed: update patch_transact_write_items")

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        if len(transact_items) > 100:
            raise TooManyTransactionsException()
        # (table name, key) -> the item's attributes before the transaction, or None.
        backup: dict[tuple[str, str], tuple[dict[str, Any], dict[str, Any] | None]] = {}

        def rollback() -> None:
            for (table_name, _), (key, before) in backup.items():
                if before is None:
                    if self.get_item(table_name, key) is not None:
                        self.delete_item(table_name, key)
                else:
                    self.put_item(table_name, before)

        errors: list[tuple[str | None, str | None, dict[str, Any] | None]] = []
        for item in transact_items:
            original_item: dict[str, Any] | None = None
            if len(list(item.keys())) > 1:
                raise TransactWriteSingleOpException
            try:
                op_type, op = next(iter(item.items()))
                if op_type not in {"ConditionCheck", "Put", "Delete", "Update"}:
                    raise ValueError("Unsupported transaction operation")
                table_name = op["TableName"]
                condition_expression = op.get("ConditionExpression")
                names = op.get("ExpressionAttributeNames")
                values = op.get("ExpressionAttributeValues")
                if op_type == "Put":
                    attrs = op["Item"]
                    table = self.get_table(table_name)
                    key = {table.hash_key_attr: attrs[table.hash_key_attr]}
                    if table.range_key_attr is not None:
                        key[table.range_key_attr] = attrs[table.range_key_attr]
                else:
                    key = op["Key"]
                marker = (str(table_name), str(dict(sorted(key.items()))))
                if marker in backup:
                    raise MultipleTransactionsException()
                current = self.get_item(table_name, key)
                backup[marker] = (key, None if current is None else current.to_json()["Attributes"])
                if condition_expression is not None:
                    condition = models.get_filter_expression(condition_expression, names, values)
                    if not condition.expr(current):
                        if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current:
                            original_item = current.to_json()["Attributes"]
                        raise ConditionalCheckFailed(item=original_item)
                kwargs = {
                    "condition_expression": condition_expression,
                    "expression_attribute_names": names,
                    "expression_attribute_values": values,
                }
                if op_type == "Put":
                    self.put_item(table_name, op["Item"], **kwargs)
                elif op_type == "Delete":
                    self.delete_item(table_name, key, **kwargs)
                elif op_type == "Update":
                    self.update_item(
                        table_name, key, update_expression=op["UpdateExpression"], **kwargs
                    )
                errors.append((None, None, None))
            except (MultipleTransactionsException, MockValidationException):
                rollback()
                raise
            except ConditionalCheckFailed as e:
                errors.append(("ConditionalCheckFailed", str(e.message), original_item))
            except Exception as e:  # noqa: BLE001 (moto reports any failure per item)
                errors.append((type(e).__name__, str(e), original_item))
        if any(code is not None for code, _, _ in errors):
            rollback()
            raise TransactionCanceledException(errors)

    models.DynamoDBBackend.transact_write_items = transact_write_items


def patch_item_size() -> None:
    """Makes building a DynamoDB item size each attribute once.

    moto 5.2.5's `Item.__init__` fills a `LimitedSizeDict` one attribute at a time, and
    `LimitedSizeDict.__setitem__` sizes every attribute already in the dict on each
    insert, to refuse an item over 405,000 bytes: quadratic in the attributes (a
    journal event's 20 attributes cost 210 sizings), and a fifth of a PutItem's CPU.
    This replacement keeps a running total instead: the same limit, the same
    `ItemSizeTooLarge` at the same attribute, the same dict. Later writes to an item's
    attributes (UpdateItem) still go through moto's check.
    """
    from moto.dynamodb.exceptions import ItemSizeTooLarge
    from moto.dynamodb.models import dynamo_type
    from moto.dynamodb.models.utilities import bytesize

    item, limited = dynamo_type.Item, dynamo_type.LimitedSizeDict
    if not (hasattr(item, "__init__") and hasattr(limited, "__setitem__")):
        raise SystemExit("moto's DynamoDB items changed: update patch_item_size")

    def __init__(self: Any, hash_key: Any, range_key: Any, attrs: dict[str, Any]) -> None:
        self.hash_key = hash_key
        self.range_key = range_key
        self.attrs = limited()
        total = 0
        for key, value in attrs.items():
            value = dynamo_type.DynamoType(value)
            # moto's limit, checked after each attribute as moto checks it (sizes are
            # never negative, so the running total crosses it at the same attribute).
            total += bytesize(key) + value.size()
            if total > 405000:
                raise ItemSizeTooLarge
            dict.__setitem__(self.attrs, key, value)

    item.__init__ = __init__


def patch_condition_cache(max_entries: int = 4096) -> None:
    """Remembers parsed DynamoDB condition expressions.

    moto 5.2.5 parses a write's condition expression twice per PutItem (to validate the
    request, then to evaluate it) and three times per transaction item, though the parse
    is a function of the expression, its names and its values alone; keyturn's journal
    writes one expression all the time. Successful parses are remembered by those exact
    inputs (up to `max_entries`, then forgotten all at once), with the names and values
    the parse found, which moto's validation reads; a failed parse is not remembered and
    fails as before. The parsed tree is only read when evaluated.
    """
    from moto.dynamodb.comparisons import ConditionExpressionParser

    if not hasattr(ConditionExpressionParser, "parse"):
        raise SystemExit("moto's condition parser changed: update patch_condition_cache")
    original = ConditionExpressionParser.parse
    cache: dict[tuple[str, str, str], tuple[Any, list[Any], list[Any]]] = {}
    lock = threading.Lock()

    def parse(self: Any) -> Any:
        try:
            key = (
                self.condition_expression,
                json.dumps(self.expression_attribute_names, sort_keys=True),
                json.dumps(self.expression_attribute_values, sort_keys=True),
            )
        except (TypeError, ValueError):
            return original(self)
        with lock:
            hit = cache.get(key)
        if hit is not None:
            tree, names, values = hit
            self.expr_attr_names_found.extend(names)
            self.expr_attr_values_found.extend(values)
            return tree
        tree = original(self)
        with lock:
            if len(cache) >= max_entries:
                cache.clear()
            cache[key] = (tree, list(self.expr_attr_names_found), list(self.expr_attr_values_found))
        return tree

    ConditionExpressionParser.parse = parse


def patch_query_partition() -> None:
    """Makes a DynamoDB Query on a table's key read only the items its key condition names.

    moto 5.2.5 answers a Query on the table itself by sorting every item of the table,
    then walking the queried partition and sizing each item against the 1 MB page limit
    before it applies the sort key condition. DynamoDB reads only the items the key
    condition selects, and only those count toward Limit and the 1 MB page. keyturn's
    journal keeps a campaign in one partition, so under moto every Query of one stream
    cost a pass over the whole journal. This wrapper hands moto's own Query only the
    partition's items that satisfy the sort key condition (moto's comparison; a plain
    prefix test for ``begins_with`` on strings), so moto's ordering, paging, projection,
    filters and errors are unchanged. Queries of an index, or with the legacy
    KeyConditions filters, go to moto as they are.
    """
    from moto.dynamodb.models.table import Table

    original = Table.query
    QUERY_KEYWORDS = {
        "index_name", "consistent_read", "filter_expression", "hash_key_conditions",
        "range_key_conditions",
    }

    class Partition:
        """A table whose ``all_items`` is a chosen list; everything else is the table's."""

        def __init__(self, table: Any, items: list[Any]) -> None:
            self._table = table
            self._items = items

        def all_items(self) -> list[Any]:
            return self._items

        def __getattr__(self, name: str) -> Any:
            return getattr(self._table, name)

    def selects(range_comparison: str | None, range_objs: list[Any]) -> Callable[[Any], bool]:
        if not range_comparison:
            return lambda item: True
        if (
            range_comparison == "BEGINS_WITH"
            and len(range_objs) == 1
            and range_objs[0].type == "S"
        ):
            prefix = range_objs[0].value
            return lambda item: (
                item.range_key is not None
                and item.range_key.type == "S"
                and item.range_key.value.startswith(prefix)
            )
        return lambda item: item.range_key is not None and item.range_key.compare(
            range_comparison, range_objs
        )

    def query(self: Any, hash_key: Any, range_comparison: str | None, range_objs: list[Any], *args: Any, **kwargs: Any) -> Any:
        # moto's DynamoDBBackend.query passes limit, exclusive start key, direction,
        # projection, index name, consistent read and filter expression by position.
        index_name = kwargs["index_name"] if "index_name" in kwargs else (args[4] if len(args) > 4 else None)
        legacy_filters = set(kwargs) - QUERY_KEYWORDS
        if index_name or hash_key is None or legacy_filters:
            return original(self, hash_key, range_comparison, range_objs, *args, **kwargs)
        partition = self.items.get(hash_key)
        if partition is None:
            items: list[Any] = []
        elif self.range_key_attr:
            keep = selects(range_comparison, range_objs)
            items = [item for item in list(partition.values()) if keep(item)]
        else:
            items = [partition]
        return original(Partition(self, items), hash_key, range_comparison, range_objs, *args, **kwargs)

    Table.query = query


def patch_dispatch(resolver: "AccountResolver") -> None:
    """Remembers answers moto works out again on every request although they never change.

    Measured with py-spy on a benchmark run (100 accounts), these took about a fifth of
    the emulator's CPU: moto finds the account of a request's access key by asking every
    account's IAM backend of every partition (creating the missing ones), lists the
    methods of the response class with ``inspect.getmembers``, and maps the request's
    host to a backend by listing moto's package directory and trying every service's URL
    pattern. The answers are the same as moto's: the account comes from the resolver the
    counters use (same search, cached, without creating backends), the methods of a
    class and the backend of a host do not change while the process runs.
    """
    import functools

    from moto.core import responses
    from moto.iam import models as iam_models
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    if not hasattr(iam_models, "get_account_id_from") or not hasattr(
        responses, "method_names_from_class"
    ):
        raise SystemExit("moto's dispatch changed: update patch_dispatch")
    iam_models.get_account_id_from = resolver.account_for
    responses.method_names_from_class = functools.cache(responses.method_names_from_class)

    backend_for_host = DomainDispatcherApplication.get_backend_for_host
    hosts: dict[str | None, Any] = {}

    def get_backend_for_host(self: Any, host: str | None) -> Any:
        # Called under the dispatcher's lock.
        if host not in hosts:
            hosts[host] = backend_for_host(self, host)
        return hosts[host]

    DomainDispatcherApplication.get_backend_for_host = get_backend_for_host


def patch_access_key_last_used() -> None:
    """Finds the key of GetAccessKeyLastUsed in the asking account first.

    moto 5.2.5's ``IAMBackend.get_access_key_last_used`` (also how CreateAccessKey,
    UpdateAccessKey, ListAccessKeys and DeleteAccessKey find the user when no UserName
    is given) lists every access key of every user of every account (creating any
    account's missing backend of the partition on the way) and answers the first key
    with the id, or NotFound: at 500 accounts of 7 keys, 5.2 ms of the emulator's one
    core per GetAccessKeyLastUsed (1.3 ms with this patch). This wrapper first looks the
    id up in the asking backend's own ``access_keys`` dict, and answers from it when the
    key is a user's: the backend has a user of the key's ``user_name`` whose
    ``access_keys`` list holds this very key, which is exactly what moto's walk finds
    (a key id embeds its account, so no other account holds one with the same id).
    Anything else (a key of another account, an STS temporary key, a deleted or renamed
    user's key, an unknown id) goes to moto's own method, so every answer and error is
    moto's.
    """
    from moto.iam import models

    if not hasattr(models.IAMBackend, "get_access_key_last_used") or not hasattr(
        models.IAMBackend, "get_all_access_keys_for_all_users"
    ):
        raise SystemExit("moto's IAM backend changed: update patch_access_key_last_used")

    original = models.IAMBackend.get_access_key_last_used

    def get_access_key_last_used(self: Any, access_key_id: str) -> dict[str, Any]:
        key = self.access_keys.get(access_key_id)
        if key is not None and key.user_name is not None:
            user = self.users.get(key.user_name)
            if user is not None and any(own is key for own in user.access_keys):
                return {"user_name": key.user_name, "last_used": key.last_used}
        return original(self, access_key_id)

    models.IAMBackend.get_access_key_last_used = get_access_key_last_used


def patch_credential_report() -> None:
    """Makes the credential report's last-used region and service columns real.

    moto writes ``not_supported`` in ``access_key_N_last_used_region`` and
    ``access_key_N_last_used_service``; AWS writes the region and service of the last
    use, or ``N/A`` for a key never used. This wraps ``User.to_csv`` to fill them in
    from the same data ``GetAccessKeyLastUsed`` reports.
    """
    from moto.iam import models

    header = models.IAMBackend.get_credential_report.__code__.co_consts
    expected = (
        "access_key_1_last_used_date,access_key_1_last_used_region,"
        "access_key_1_last_used_service,access_key_2_active"
    )
    if not any(isinstance(const, str) and expected in const for const in header):
        raise SystemExit("moto's credential report layout changed: update patch_credential_report")

    original = models.User.to_csv

    def to_csv(self: Any) -> str:
        line = original(self)
        # The user name and ARN may hold commas; the 20 columns after them cannot.
        head, *rest = line.rstrip("\n").rsplit(",", 20)
        for index, column in ((0, 9), (1, 14)):
            if index < len(self.access_keys) and self.access_keys[index].last_used is not None:
                used = self.access_keys[index].last_used
                rest[column] = getattr(used, "region", "N/A")
                rest[column + 1] = getattr(used, "service", "N/A")
            else:
                rest[column] = "N/A"
                rest[column + 1] = "N/A"
        return ",".join([head, *rest]) + "\n"

    models.User.to_csv = to_csv

    # moto answers a fixed GeneratedTime (2015); AWS answers when the report was
    # generated, which keyturn reads to decide whether to generate a new one.
    from moto.iam import responses

    original_generate = models.IAMBackend.generate_report

    def generate_report(self: Any) -> None:
        if not self.credential_report:
            self.keyturn_report_generated_at = dt.datetime.now(dt.timezone.utc)
        original_generate(self)

    original_get = responses.IamResponse.get_credential_report

    def get_credential_report(self: Any) -> Any:
        answer = original_get(self)
        generated = getattr(self.backend, "keyturn_report_generated_at", None)
        if generated is not None and isinstance(answer.result, dict):
            answer.result["GeneratedTime"] = generated.strftime("%Y-%m-%dT%H:%M:%SZ")
        return answer

    models.IAMBackend.generate_report = generate_report
    responses.IamResponse.get_credential_report = get_credential_report


# --------------------------------------------------------------------------------------
# The middleware.
# --------------------------------------------------------------------------------------


class DirectDispatch:
    """Answers ``POST /`` of the services keyturn calls without Flask, as moto's app would.

    moto serves each service with a Flask app whose one rule for ``/`` calls the
    service's ``dispatch`` through ``moto.core.utils.convert_to_flask_response``. For the
    query and JSON protocol services keyturn uses, everything Flask adds around that call
    (a request context, URL routing, response finalising, flask-cors's after-request
    hook) took about a sixth of the emulator's CPU and changes nothing in the answer.
    This wrapper makes the same call on the same request class and builds the same
    response: ``convert_to_flask_response``'s body, then what Flask does with an
    ``HTTPException`` (answers it as a response) and what flask-cors adds to a request
    with no ``Origin`` header (``Access-Control-Allow-Origin: *``). Anything else (other
    paths, methods and services, a request with an ``Origin``) goes to moto's dispatcher
    as before. The self-test compares the two paths' answers byte for byte.
    """

    SERVICES = ("iam", "sts", "organizations", "dynamodb")

    def __init__(self, dispatcher: Any) -> None:
        from botocore.exceptions import ClientError
        from flask import Response
        from moto.moto_api import recorder
        from moto.moto_server.werkzeug_app import BackendRequest
        from werkzeug.exceptions import HTTPException

        self.client_error = ClientError
        self.http_exception = HTTPException
        self.response_class = Response
        self.request_class = BackendRequest
        self.recorder = recorder
        self.dispatcher = dispatcher
        # By moto's Flask app for the service (the dispatcher keeps one per service).
        self.handlers: dict[Any, Callable[..., Any]] = {}
        for service in self.SERVICES:
            app = dispatcher.app_instances[service]
            endpoint, arguments = app.url_map.bind("localhost").match("/", method="POST")
            view = app.view_functions[endpoint]
            handler = getattr(view, "callback", None)
            if arguments or handler is None or getattr(handler, "__name__", "") != "dispatch":
                raise SystemExit(f"moto's {service} app changed: update DirectDispatch")
            self.handlers[app] = handler

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if (
            environ.get("REQUEST_METHOD") != "POST"
            or environ.get("PATH_INFO") != "/"
            or "HTTP_ORIGIN" in environ
        ):
            return self.dispatcher(environ, start_response)
        app = self.dispatcher.get_application(environ)
        handler = self.handlers.get(app)
        if handler is None:
            return app(environ, start_response)

        request = self.request_class(environ)
        try:
            self.recorder._record_request(request)
            try:
                result = handler(request, request.raw_url, dict(request.headers))
            except self.client_error as exc:
                result = 400, {}, exc.response["Error"]["Message"]
            if len(result) == 3:
                status, headers, content = result
            else:
                status, headers, content = 200, {}, result
            response = self.response_class(response=content, status=status, headers=headers)
        except self.http_exception as exc:
            response = self.response_class.force_type(exc, environ)
        if "Access-Control-Allow-Origin" not in response.headers:
            response.headers["Access-Control-Allow-Origin"] = "*"
        return response(environ, start_response)


class KeyturnMiddleware:
    """Wraps moto's WSGI app: control endpoints, counters, faults, optional serial mode."""

    def __init__(
        self, app: Callable[..., Iterable[bytes]], serial: bool, resolver: AccountResolver
    ) -> None:
        self.app = app
        self.serial = serial
        self.serial_lock = threading.Lock()
        self.state_lock = threading.Lock()
        self.resolver = resolver
        self.rules: list[FaultRule] = []
        self.counts: dict[tuple[str, str, str], int] = {}
        # Thread CPU time moto spent serving each (service, action), in seconds.
        self.cpu: dict[tuple[str, str], float] = {}
        self.total = 0
        self.faults_injected = 0
        self.latency_injected = 0
        self.assume_role_requests: list[dict[str, str]] = []
        self.deny_source_identity: set[str] = set()
        # Signed requests being handled now (injected latency included), by account, and
        # the most ever at once: how many requests a client keeps in flight per account
        # and across member accounts (every account but the default one).
        self.in_flight: dict[str, int] = {}
        self.max_in_flight: dict[str, int] = {}
        self.action_in_flight: dict[tuple[str, str, str], int] = {}
        self.max_action_in_flight: dict[tuple[str, str, str], int] = {}
        self.member_accounts_in_flight = 0
        self.max_member_accounts_in_flight = 0

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith(CONTROL_PREFIX):
            return self.control(environ, start_response)
        if path.startswith("/moto-api/reset"):
            self.resolver.clear()

        c = classify(environ, self.resolver)
        # The request's bookkeeping takes the state lock twice: on the way in (counts,
        # requests in flight, faults) and on the way out (in flight, moto's CPU).
        with self.state_lock:
            if c.signed:
                self.enter(c)
            delay, answer = self.count_and_pick_faults(c)
        cpu = 0.0
        try:
            if delay:
                time.sleep(delay)
            if answer is not None:
                status, headers, body = fault_response(answer.kind, answer.status, c)
                start_response(status, headers)
                return [body]
            if c.service == "sts" and c.action == "AssumeRole":
                denied = self.note_assume_role(environ)
                if denied is not None:
                    start_response(denied[0], denied[1])
                    return [denied[2]]
            started = time.thread_time()
            try:
                return self.serve(environ, start_response)
            finally:
                cpu = time.thread_time() - started
        finally:
            with self.state_lock:
                if c.signed:
                    self.leave(c)
                if cpu:
                    key = (c.service, c.action)
                    self.cpu[key] = self.cpu.get(key, 0.0) + cpu

    def enter(self, c: Classified) -> None:
        """Counts a signed request in flight (under the state lock)."""
        n = self.in_flight.get(c.account, 0) + 1
        self.in_flight[c.account] = n
        self.max_in_flight[c.account] = max(self.max_in_flight.get(c.account, 0), n)
        key = (c.service, c.action, c.account)
        k = self.action_in_flight.get(key, 0) + 1
        self.action_in_flight[key] = k
        self.max_action_in_flight[key] = max(self.max_action_in_flight.get(key, 0), k)
        if n == 1 and c.account != DEFAULT_ACCOUNT_ID:
            self.member_accounts_in_flight += 1
            self.max_member_accounts_in_flight = max(
                self.max_member_accounts_in_flight, self.member_accounts_in_flight
            )

    def leave(self, c: Classified) -> None:
        """Counts a signed request out of flight (under the state lock)."""
        n = self.in_flight[c.account] - 1
        self.in_flight[c.account] = n
        self.action_in_flight[(c.service, c.action, c.account)] -= 1
        if n == 0 and c.account != DEFAULT_ACCOUNT_ID:
            self.member_accounts_in_flight -= 1

    def count_and_pick_faults(self, c: Classified) -> tuple[float, FaultRule | None]:
        """Counts the request and picks the latency and the fault injected into it, if
        any (under the state lock)."""
        delay = 0.0
        answer: FaultRule | None = None
        key = (c.service, c.action, c.account)
        self.total += 1
        self.counts[key] = self.counts.get(key, 0) + 1
        if self.rules and c.signed:
            for rule in self.rules:
                if rule.kind == "latency":
                    if rule.matches(c) and rule.try_fire():
                        delay += rule.latency_ms / 1000.0
                        self.latency_injected += 1
                elif answer is None and rule.matches(c) and rule.try_fire():
                    answer = rule
        if answer is not None:
            self.faults_injected += 1
        return delay, answer

    def serve(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """Has moto answer the request."""
        if not self.serial:
            return self.app(environ, start_response)
        with self.serial_lock:
            # Run moto and drain its response while holding the lock, so each request
            # is atomic (moto's threaded server is not, for conditional writes).
            result = self.app(environ, start_response)
            try:
                body = b"".join(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        return [body]

    def note_assume_role(self, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes] | None:
        """Records an AssumeRole request's parameters; answers AccessDenied when it sets a
        source identity on a role that does not allow it."""
        body = _buffer_body(environ).decode("utf-8", "replace")
        params = {k: v[0] for k, v in parse_qs(body).items()}
        note = {
            name: params.get(name, "")
            for name in ("RoleArn", "RoleSessionName", "ExternalId", "SourceIdentity")
        }
        account = note["RoleArn"].split(":")[4] if note["RoleArn"].count(":") >= 5 else ""
        with self.state_lock:
            self.assume_role_requests.append(note)
            denied = bool(note["SourceIdentity"]) and account in self.deny_source_identity
        if not denied:
            return None
        request_id = str(uuid.uuid4())
        message = (
            f"User is not authorized to perform: sts:SetSourceIdentity on resource: {note['RoleArn']}"
        )
        data = (
            f'<ErrorResponse xmlns="{QUERY_NAMESPACE.get("sts", "")}"><Error><Type>Sender</Type>'
            f"<Code>AccessDenied</Code><Message>{message}</Message></Error>"
            f"<RequestId>{request_id}</RequestId></ErrorResponse>"
        ).encode()
        headers = [
            ("Content-Type", "text/xml"),
            ("Content-Length", str(len(data))),
            ("x-amzn-RequestId", request_id),
        ]
        return "403 Forbidden", headers, data

    # Control endpoints -----------------------------------------------------------------

    def control(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "")[len(CONTROL_PREFIX) :].rstrip("/")
        try:
            body = self.read_json(environ)
            status, payload = self.route(method, path, body)
        except ValueError as err:
            status, payload = 400, {"error": str(err)}
        except Exception as err:  # Test support: report, never crash the server.
            log.exception("control endpoint %s %s failed", method, path)
            status, payload = 500, {"error": f"{type(err).__name__}: {err}"}
        data = json.dumps(payload).encode()
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 500: "Internal Server Error"}
        start_response(
            f"{status} {reason.get(status, 'Error')}",
            [("Content-Type", "application/json"), ("Content-Length", str(len(data)))],
        )
        return [data]

    @staticmethod
    def read_json(environ: dict[str, Any]) -> Any:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length) if length else b""
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except json.JSONDecodeError as err:
            raise ValueError(f"the body is not JSON: {err}") from err

    def route(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        if path == "health" and method == "GET":
            return 200, {"ok": True}
        if path == "iam/access-key" and method == "POST":
            if not isinstance(body, dict):
                raise ValueError("expected a JSON object")
            if self.serial:
                with self.serial_lock:
                    return set_access_key(body)
            return set_access_key(body)
        if path == "faults":
            if method == "GET":
                with self.state_lock:
                    return 200, {"rules": [rule.describe() for rule in self.rules]}
            if method == "POST":
                if not isinstance(body, dict) or not isinstance(body.get("rules"), list):
                    raise ValueError('expected {"rules": [...]}')
                rules = [FaultRule(spec) for spec in body["rules"]]
                with self.state_lock:
                    self.rules = rules
                return 200, {"rules": len(rules)}
            if method == "DELETE":
                with self.state_lock:
                    self.rules = []
                return 200, {"rules": 0}
        if path == "counters" and method == "GET":
            with self.state_lock:
                requests = [
                    {"service": s, "action": a, "account": acct, "count": n}
                    for (s, a, acct), n in sorted(self.counts.items())
                ]
                cpu = [
                    {"service": s, "action": a, "micros": round(seconds * 1e6)}
                    for (s, a), seconds in sorted(self.cpu.items())
                ]
                return 200, {
                    "total": self.total,
                    "faults_injected": self.faults_injected,
                    "latency_injected": self.latency_injected,
                    "requests": requests,
                    "cpu": cpu,
                    "concurrency": {
                        "max_in_flight": [
                            {"account": a, "max": n}
                            for a, n in sorted(self.max_in_flight.items())
                        ],
                        "max_in_flight_by_action": [
                            {"service": s, "action": a, "account": acct, "max": n}
                            for (s, a, acct), n in sorted(self.max_action_in_flight.items())
                        ],
                        "max_member_accounts_in_flight": self.max_member_accounts_in_flight,
                    },
                }
        if path == "counters/reset" and method == "POST":
            with self.state_lock:
                self.counts = {}
                self.cpu = {}
                self.max_in_flight = {}
                self.max_action_in_flight = {}
                self.max_member_accounts_in_flight = 0
                self.total = 0
                self.faults_injected = 0
                self.latency_injected = 0
            return 200, {"ok": True}
        if path == "process" and method == "GET":
            usage = resource.getrusage(resource.RUSAGE_SELF)
            return 200, {
                "cpu_seconds": usage.ru_utime + usage.ru_stime,
                "max_rss_kb": int(usage.ru_maxrss),
            }
        if path == "sts/assume-role":
            if method == "GET":
                with self.state_lock:
                    return 200, {"requests": list(self.assume_role_requests)}
            if method == "POST":
                accounts = body.get("deny_source_identity") if isinstance(body, dict) else None
                if not isinstance(accounts, list) or not all(isinstance(a, str) for a in accounts):
                    raise ValueError('expected {"deny_source_identity": ["<account id>", ...]}')
                with self.state_lock:
                    self.deny_source_identity = set(accounts)
                return 200, {"deny_source_identity": sorted(accounts)}
        known = {
            "health", "iam/access-key", "faults", "counters", "counters/reset", "process",
            "sts/assume-role",
        }
        if path in known:
            return 405, {"error": f"{method} is not allowed on /_keyturn/{path}"}
        return 404, {"error": f"no control endpoint /_keyturn/{path}"}


# --------------------------------------------------------------------------------------
# Start-up.
# --------------------------------------------------------------------------------------


def serve(app: Callable[..., Iterable[bytes]], host: str, port: int) -> None:
    """Serves ``app`` with granian, a Rust HTTP server, until the process exits.

    Why granian: the HTTP work (reading requests, parsing headers, writing responses)
    runs in Rust threads that do not hold the GIL, so it no longer competes with moto
    for the one core the GIL allows. With waitress (pure Python: an asyncore loop
    thread plus request threads) that work was about a third of the emulator's CPU, and
    the loop thread and the request threads took turns on the GIL: at 100 accounts the
    inventory took 2.0 s and the journalled retirement 3.9 s, and 0.9 s and 1.8 s with
    granian (same machine, back to back). werkzeug's development server was ruled out
    before: it closes the connection after every response.

    On a GIL build granian's own ``Server`` runs its workers as child processes, which
    would hide moto's state and this process's counters from the control endpoints and
    leave orphans when the parent is killed. Its ``MTServer`` runs one worker as a
    thread of this process; it refuses to start with the GIL on only because it targets
    free-threaded Python, and one worker thread under the GIL is exactly what this
    emulator wants. Two overrides: no GIL check, and the listening socket is bound here
    from the given port (0: any free one) so that the port actually bound can be
    announced, once the worker accepts connections. The request threads are granian's
    "blocking threads": as many as waitress had, for the same reason (injected latency
    is a sleep in a request thread).
    """
    import socket

    from granian._granian import ListenerSpec
    from granian.constants import Interfaces
    from granian.log import LogLevels
    from granian.server import MTServer

    class Server(MTServer):  # type: ignore[misc]
        effective_port = 0

        def _check_gil(self) -> None:
            pass

        def _init_shared_socket(self) -> None:
            self._ssp = None
            self._shd = ListenerSpec(self.bind_addr, self.bind_port, self.backlog).build()
            self._sfd = self._shd.get_fd()
            with socket.socket(fileno=os.dup(self._sfd)) as bound:
                self.effective_port = bound.getsockname()[1]
            os.environ.setdefault("MOTO_PORT", str(self.effective_port))

        def startup(self, spawn_target: Any, target_loader: Any) -> None:
            super().startup(spawn_target, target_loader)
            # The worker thread starts listening on its own: announce the port only
            # once a connection is accepted.
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection((host, self.effective_port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.01)
            print(f"KEYTURN_EMULATOR_READY http://{host}:{self.effective_port}", flush=True)

    stderr = {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"}
    server = Server(
        "keyturn-emulator",
        address=host,
        port=port,
        interface=Interfaces.WSGI,
        workers=1,
        blocking_threads=WORKER_THREADS,
        blocking_threads_idle_timeout=600,
        # granian logs to stdout by default, where only the ready line belongs.
        log_level=LogLevels.error,
        log_dictconfig={
            "handlers": {
                "console": {**stderr, "formatter": "generic"},
                "access": {**stderr, "formatter": "access"},
            }
        },
    )
    server.serve(target_loader=lambda _target: app)


def exit_on_stdin_eof() -> None:
    """Exits the process at once when stdin reaches end of file (the parent is gone)."""
    try:
        while os.read(0, 65536):
            pass
    except OSError:
        pass
    os._exit(0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--serial", action="store_true", help="handle one moto request at a time")
    parser.add_argument("--exit-on-stdin-eof", action="store_true", help="exit when stdin closes")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s: %(message)s")

    if args.exit_on_stdin_eof:
        threading.Thread(target=exit_on_stdin_eof, name="stdin-watch", daemon=True).start()

    import granian
    import moto
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    for package, expected in ((moto, EXPECTED_MOTO_VERSION), (granian, EXPECTED_GRANIAN_VERSION)):
        if package.__version__ != expected:
            raise SystemExit(
                f"server.py relies on {package.__name__} {expected} internals,"
                f" found {package.__version__}"
            )
    resolver = AccountResolver()
    patch_credential_report()
    patch_transact_write_items()
    patch_item_size()
    patch_condition_cache()
    patch_query_partition()
    patch_access_key_last_used()
    patch_dispatch(resolver)

    dispatcher = DomainDispatcherApplication(create_backend_app)
    # Build the apps of the services keyturn uses now, so the first request of a test
    # does not pay for importing a backend.
    for service in ("iam", "sts", "organizations", "dynamodb", "secretsmanager"):
        dispatcher.app_instances[service] = create_backend_app(service)

    app = KeyturnMiddleware(DirectDispatch(dispatcher), serial=args.serial, resolver=resolver)
    serve(app, args.host, args.port)


if __name__ == "__main__":
    main()
