"""The DynamoDB stand-in keeps acknowledged writes through `kill -9`, and the services refuse
to paper over lost tables: readiness checks every table, and a partial set is never refilled."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError
from cnop.core.db import TablesLost, build_tables, ensure_tables, ping
from cnop.core.settings import ServiceSettings

from tests.conftest import free_port, wait_for_port


class Moto:
    def __init__(self, journal: Path) -> None:
        self.journal = journal
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [sys.executable, "-m", "cnop.core.moto_server", "-H", "127.0.0.1"]
        self.proc = subprocess.Popen(
            [*argv, "-p", str(self.port), "--journal", str(self.journal)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, timeout=60)

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def client(self) -> object:
        return boto3.client(
            "dynamodb",
            endpoint_url=f"http://127.0.0.1:{self.port}",
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )


@pytest.fixture
def moto(tmp_path: Path) -> Iterator[Moto]:
    server = Moto(tmp_path / "data" / "dynamodb.journal")
    server.start()
    try:
        yield server
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.proc.terminate()
            server.proc.wait(10)


def _table(client: object, name: str) -> None:
    client.create_table(  # type: ignore[attr-defined]
        TableName=name,
        KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )


def test_acknowledged_writes_survive_kill_9(moto: Moto) -> None:
    client = moto.client()
    _table(client, "t")
    for i in range(30):
        client.put_item(TableName="t", Item={"k": {"S": str(i)}, "v": {"N": str(i)}})
    client.update_item(
        TableName="t",
        Key={"k": {"S": "1"}},
        UpdateExpression="SET v = v + :d",
        ExpressionAttributeValues={":d": {"N": "100"}},
    )
    with pytest.raises(ClientError, match="ConditionalCheckFailed"):
        client.put_item(
            TableName="t",
            Item={"k": {"S": "2"}, "v": {"N": "-1"}},
            ConditionExpression="attribute_not_exists(k)",
        )
    client.transact_write_items(
        TransactItems=[{"Put": {"TableName": "t", "Item": {"k": {"S": "tx"}}}}]
    )
    client.delete_item(TableName="t", Key={"k": {"S": "0"}})

    moto.kill()
    moto.start()
    client = moto.client()
    assert client.scan(TableName="t", Select="COUNT")["Count"] == 30  # 30 + tx - deleted
    assert client.get_item(TableName="t", Key={"k": {"S": "1"}})["Item"]["v"] == {"N": "101"}
    assert client.get_item(TableName="t", Key={"k": {"S": "2"}})["Item"]["v"] == {"N": "2"}
    assert "Item" not in client.get_item(TableName="t", Key={"k": {"S": "0"}})


def test_reads_and_refused_writes_are_not_journaled(moto: Moto) -> None:
    client = moto.client()
    _table(client, "t")
    client.put_item(TableName="t", Item={"k": {"S": "a"}})
    lines = moto.journal.read_text().count("\n")
    client.get_item(TableName="t", Key={"k": {"S": "a"}})
    client.scan(TableName="t")
    with pytest.raises(ClientError):
        client.put_item(
            TableName="t", Item={"k": {"S": "a"}}, ConditionExpression="attribute_not_exists(k)"
        )
    assert moto.journal.read_text().count("\n") == lines == 2


def test_a_torn_last_line_is_skipped(moto: Moto) -> None:
    client = moto.client()
    _table(client, "t")
    client.put_item(TableName="t", Item={"k": {"S": "kept"}})
    moto.kill()
    with moto.journal.open("a") as handle:
        handle.write('{"headers": {"X-Amz-Tar')  # the process died mid-line
    moto.start()
    client = moto.client()
    assert client.scan(TableName="t", Select="COUNT")["Count"] == 1


def _tables(endpoint: str, prefix: str) -> object:
    settings = ServiceSettings(
        service_name="user",
        dev_mode=True,
        dynamodb_endpoint=endpoint,
        table_prefix=prefix,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    return build_tables(settings)


def test_a_lost_table_fails_readiness_and_is_not_recreated(dynamodb_endpoint: str) -> None:
    tables = _tables(dynamodb_endpoint, f"lost{os.getpid()}")
    ensure_tables(tables)  # a fresh DynamoDB: every table created
    ping(tables)
    first = tables.all()[0]
    first.delete_table()
    with pytest.raises(TablesLost, match=first.Meta.table_name):
        ping(tables)
    with pytest.raises(TablesLost, match=first.Meta.table_name):
        ensure_tables(tables, settle_seconds=0.5)
    assert not first.exists()
